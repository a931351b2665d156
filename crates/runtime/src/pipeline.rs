//! The pipeline's state: which container runs next, the status CI reads,
//! the `B2C_PIPELINE_*` variables, and how the machine ends.

/// Status of a boot whose setup failed before a container could run.
pub const SETUP_FAILED: i32 = 1;
/// Exit code of a container whose process called reboot(2) to restart.
pub const EXIT_REBOOT: i32 = 129;
/// Exit code of a container whose process called reboot(2) to power off.
pub const EXIT_POWEROFF: i32 = 130;

/// The status CI reads from `Execution is over, pipeline status: N`: the
/// exit code of the first failing `b2c.run` container, 0 when all passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStatus {
    code: i32,
}

impl PipelineStatus {
    /// Records a container's exit code; the first failure sticks.
    pub fn record(&mut self, exit_code: i32) {
        if self.code == 0 {
            self.code = exit_code;
        }
    }

    pub fn setup_failed() -> Self {
        PipelineStatus { code: SETUP_FAILED }
    }

    pub fn code(&self) -> i32 {
        self.code
    }

    pub fn failed(&self) -> bool {
        self.code != 0
    }

    /// The line CI parses, byte-exact.
    pub fn line(&self) -> String {
        format!("Execution is over, pipeline status: {}", self.code)
    }
}

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    #[default]
    PowerOff,
    Reboot,
}

impl ShutdownMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ShutdownMode::PowerOff => "poweroff",
            ShutdownMode::Reboot => "reboot",
        }
    }
}

/// Which list of the command line a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `b2c.run`: decides the status.
    Run,
    /// `b2c.post_container`: always runs, never changes the status.
    Post,
}

/// Why a `b2c.run` container is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `b2c.pipefail` and an earlier container failed.
    PipeFail,
    /// An earlier container asked for a reboot or power-off.
    ShutdownRequested,
}

#[derive(Debug, Default)]
pub struct Pipeline {
    pipefail: bool,
    status: PipelineStatus,
    failed_by: Option<String>,
    previous: Option<(String, i32)>,
    shutdown: ShutdownMode,
    shutdown_requested: bool,
}

impl Pipeline {
    pub fn new(pipefail: bool) -> Self {
        Pipeline {
            pipefail,
            ..Default::default()
        }
    }

    /// Whether the next container of `stage` runs.
    pub fn skip(&self, stage: Stage) -> Option<Skip> {
        match stage {
            Stage::Post => None,
            Stage::Run if self.shutdown_requested => Some(Skip::ShutdownRequested),
            Stage::Run if self.pipefail && self.status.failed() => Some(Skip::PipeFail),
            Stage::Run => None,
        }
    }

    /// Records how a container ended. A container that called reboot(2)
    /// exits with 129 (reboot) or 130 (power-off): that is a request for the
    /// machine, not a failure, and no further `b2c.run` container starts.
    pub fn record(&mut self, stage: Stage, name: &str, exit_code: i32) {
        self.previous = Some((name.to_string(), exit_code));
        let code = match exit_code {
            EXIT_REBOOT | EXIT_POWEROFF => {
                self.shutdown = if exit_code == EXIT_REBOOT {
                    ShutdownMode::Reboot
                } else {
                    ShutdownMode::PowerOff
                };
                self.shutdown_requested = true;
                0
            }
            code => code,
        };
        if stage == Stage::Run && code != 0 && !self.status.failed() {
            self.status.record(code);
            self.failed_by = Some(name.to_string());
        }
    }

    pub fn status(&self) -> PipelineStatus {
        self.status
    }

    pub fn shutdown(&self) -> ShutdownMode {
        self.shutdown
    }

    /// The variables every container gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let (prev, prev_code) = match &self.previous {
            Some((name, code)) => (name.clone(), code.to_string()),
            None => (String::new(), String::new()),
        };
        [
            ("B2C_PIPELINE_STATUS", self.status.code().to_string()),
            (
                "B2C_PIPELINE_FAILED_BY",
                self.failed_by.clone().unwrap_or_default(),
            ),
            ("B2C_PIPELINE_PREV_CONTAINER", prev),
            ("B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE", prev_code),
            (
                "B2C_PIPELINE_SHUTDOWN_MODE",
                self.shutdown.as_str().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(p: &Pipeline, key: &str) -> String {
        p.env().into_iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn first_failure_is_the_status() {
        let mut s = PipelineStatus::default();
        assert_eq!(s.line(), "Execution is over, pipeline status: 0");
        s.record(0);
        s.record(3);
        s.record(5);
        assert_eq!(s.code(), 3);
        assert_eq!(s.line(), "Execution is over, pipeline status: 3");
        assert_eq!(PipelineStatus::setup_failed().code(), 1);
    }

    #[test]
    fn without_pipefail_everything_runs() {
        let mut p = Pipeline::new(false);
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER"), "");
        p.record(Stage::Run, "a", 5);
        assert_eq!(p.skip(Stage::Run), None);
        p.record(Stage::Run, "b", 6);
        assert_eq!(p.status().code(), 5);
        assert_eq!(var(&p, "B2C_PIPELINE_FAILED_BY"), "a");
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER"), "b");
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE"), "6");
    }

    #[test]
    fn pipefail_skips_runs_but_not_posts() {
        let mut p = Pipeline::new(true);
        p.record(Stage::Run, "a", 0);
        assert_eq!(p.skip(Stage::Run), None);
        p.record(Stage::Run, "b", 7);
        assert_eq!(p.skip(Stage::Run), Some(Skip::PipeFail));
        assert_eq!(p.skip(Stage::Post), None);
        p.record(Stage::Post, "post", 1);
        assert_eq!(
            p.status().code(),
            7,
            "post containers never change the status"
        );
        assert_eq!(var(&p, "B2C_PIPELINE_STATUS"), "7");
    }

    #[test]
    fn reboot_request_is_the_final_action_not_a_failure() {
        let mut p = Pipeline::new(false);
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "poweroff");
        p.record(Stage::Run, "flasher", EXIT_REBOOT);
        assert_eq!(p.status().code(), 0);
        assert_eq!(p.shutdown(), ShutdownMode::Reboot);
        assert_eq!(p.skip(Stage::Run), Some(Skip::ShutdownRequested));
        assert_eq!(p.skip(Stage::Post), None);
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "reboot");
        let mut q = Pipeline::new(false);
        q.record(Stage::Post, "p", EXIT_POWEROFF);
        assert_eq!(q.shutdown(), ShutdownMode::PowerOff);
    }
}
