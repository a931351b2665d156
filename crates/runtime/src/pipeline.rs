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
    /// Nobody asked: power off.
    #[default]
    Default,
    PowerOff,
    Reboot,
}

impl ShutdownMode {
    /// As boot2container names it in `B2C_PIPELINE_SHUTDOWN_MODE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShutdownMode::Default => "default",
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

#[derive(Debug, Default)]
pub struct Pipeline {
    pipefail: bool,
    status: PipelineStatus,
    failed_by: Option<String>,
    previous: Option<(String, i32)>,
    shutdown: ShutdownMode,
}

impl Pipeline {
    pub fn new(pipefail: bool) -> Self {
        Pipeline {
            pipefail,
            ..Default::default()
        }
    }

    /// Whether the next container of `stage` is skipped: with
    /// `b2c.pipefail`, every `b2c.run` container after a failure.
    pub fn skip(&self, stage: Stage) -> bool {
        stage == Stage::Run && self.pipefail && self.status.failed()
    }

    /// Records how a container ended. A container that called reboot(2)
    /// exits with 129 (reboot) or 130 (power-off), which also decides how
    /// the machine ends. As in boot2container, that exit code still counts
    /// like any other: CI sees it in the status.
    pub fn record(&mut self, stage: Stage, name: &str, exit_code: i32) {
        self.previous = Some((name.to_string(), exit_code));
        match exit_code {
            EXIT_REBOOT => self.shutdown = ShutdownMode::Reboot,
            EXIT_POWEROFF => self.shutdown = ShutdownMode::PowerOff,
            _ => {}
        }
        if stage == Stage::Run && exit_code != 0 && !self.status.failed() {
            self.status.record(exit_code);
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
        assert!(!p.skip(Stage::Run));
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
        assert!(!p.skip(Stage::Run));
        p.record(Stage::Run, "b", 7);
        assert!(p.skip(Stage::Run));
        assert!(!p.skip(Stage::Post));
        p.record(Stage::Post, "post", 1);
        assert_eq!(
            p.status().code(),
            7,
            "post containers never change the status"
        );
        assert_eq!(var(&p, "B2C_PIPELINE_STATUS"), "7");
    }

    #[test]
    fn reboot_request_is_the_final_action_and_the_status() {
        let mut p = Pipeline::new(false);
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "default");
        p.record(Stage::Run, "flasher", EXIT_REBOOT);
        assert_eq!(p.status().code(), EXIT_REBOOT);
        assert_eq!(p.shutdown(), ShutdownMode::Reboot);
        assert!(!p.skip(Stage::Run));
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "reboot");
        let mut q = Pipeline::new(true);
        q.record(Stage::Post, "p", EXIT_POWEROFF);
        assert_eq!(q.shutdown(), ShutdownMode::PowerOff);
        assert_eq!(
            q.status().code(),
            0,
            "post containers never change the status"
        );
    }
}
