//! The pipeline's state: which container runs next, the status CI reads,
//! the `B2C_PIPELINE_*` variables, and how the machine ends.

use b2c_cmdline::Stage;

/// Exit code of a container whose process called reboot(2) to restart.
pub const EXIT_REBOOT: i32 = 129;
/// Exit code of a container whose process called reboot(2) to power off.
pub const EXIT_POWEROFF: i32 = 130;

/// The verdict CI reads from `Execution is over, pipeline status: N`.
///
/// Setup failures and containers that could not be started show as 1 on
/// the console, as in boot2container, but stay distinct here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum PipelineStatus {
    /// Every `b2c.run` container exited 0 (or there was none).
    #[default]
    Passed,
    /// The first failing `b2c.run` container exited with this code.
    Failed(i32),
    /// The first failing `b2c.run` container could not be started.
    NotStarted,
    /// The boot failed before the pipeline could run.
    SetupFailed,
    /// `b2c.timeout`: the pipeline ran too long, and was stopped.
    TimedOut,
}

/// The status of a pipeline stopped by `b2c.timeout`, as coreutils'
/// `timeout` exits.
pub const EXIT_TIMED_OUT: i32 = 124;

impl PipelineStatus {
    /// The number on the status line.
    pub fn code(&self) -> i32 {
        match self {
            PipelineStatus::Passed => 0,
            PipelineStatus::Failed(code) => *code,
            PipelineStatus::NotStarted | PipelineStatus::SetupFailed => 1,
            PipelineStatus::TimedOut => EXIT_TIMED_OUT,
        }
    }

    pub fn failed(&self) -> bool {
        *self != PipelineStatus::Passed
    }

    /// The line CI parses, byte-exact.
    pub fn line(&self) -> String {
        format!("Execution is over, pipeline status: {}", self.code())
    }
}

/// How one container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEnd {
    Exited(i32),
    /// Its image, spec or crun failed before it ran.
    NotStarted,
}

impl ContainerEnd {
    fn as_status(self) -> PipelineStatus {
        match self {
            ContainerEnd::Exited(0) => PipelineStatus::Passed,
            ContainerEnd::Exited(code) => PipelineStatus::Failed(code),
            ContainerEnd::NotStarted => PipelineStatus::NotStarted,
        }
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

#[derive(Debug, Default)]
pub struct Pipeline {
    pipefail: bool,
    status: PipelineStatus,
    failed_by: Option<String>,
    previous: Option<(String, PipelineStatus)>,
    shutdown: ShutdownMode,
}

impl Pipeline {
    pub fn new(pipefail: bool) -> Self {
        Pipeline {
            pipefail,
            ..Default::default()
        }
    }

    /// The state a boot whose setup failed ends with: status 1, nothing ran.
    pub fn setup_failed() -> Self {
        Pipeline {
            status: PipelineStatus::SetupFailed,
            ..Default::default()
        }
    }

    /// Whether the next container of `stage` is skipped: with
    /// `b2c.pipefail`, every `b2c.run` container after a failure.
    pub fn skip(&self, stage: Stage) -> bool {
        stage == Stage::Run && self.pipefail && self.status.failed()
    }

    /// Records how a container ended; `name` is what the variables show of
    /// it (the whole option value). A container that called reboot(2)
    /// exits with 129 (reboot) or 130 (power-off), which also decides how
    /// the machine ends. As in boot2container, that exit code still counts
    /// like any other: CI sees it in the status.
    pub fn record(&mut self, stage: Stage, name: &str, end: ContainerEnd) {
        let status = end.as_status();
        self.previous = Some((name.to_string(), status));
        match end {
            ContainerEnd::Exited(EXIT_REBOOT) => self.shutdown = ShutdownMode::Reboot,
            ContainerEnd::Exited(EXIT_POWEROFF) => self.shutdown = ShutdownMode::PowerOff,
            _ => {}
        }
        if stage == Stage::Run && status.failed() && !self.status.failed() {
            self.status = status;
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
    /// `b2c.timeout` stopped the pipeline: status 124, whatever the
    /// containers' own statuses were.
    pub fn time_out(&mut self) {
        self.status = PipelineStatus::TimedOut;
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let (prev, prev_code) = match &self.previous {
            Some((name, status)) => (name.clone(), status.code().to_string()),
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
        let mut p = Pipeline::new(false);
        assert_eq!(p.status().line(), "Execution is over, pipeline status: 0");
        p.record(Stage::Run, "a", ContainerEnd::Exited(0));
        p.record(Stage::Run, "b", ContainerEnd::Exited(3));
        p.record(Stage::Run, "c", ContainerEnd::Exited(5));
        assert_eq!(p.status(), PipelineStatus::Failed(3));
        assert_eq!(p.status().line(), "Execution is over, pipeline status: 3");
        assert_eq!(PipelineStatus::SetupFailed.code(), 1);
    }

    #[test]
    fn a_container_that_did_not_start_shows_as_1_but_is_told_apart() {
        let mut p = Pipeline::new(false);
        p.record(Stage::Run, "a", ContainerEnd::NotStarted);
        assert_eq!(p.status(), PipelineStatus::NotStarted);
        assert_ne!(p.status(), PipelineStatus::Failed(1));
        assert_eq!(p.status().code(), 1);
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE"), "1");
    }

    #[test]
    fn without_pipefail_everything_runs() {
        let mut p = Pipeline::new(false);
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER"), "");
        p.record(Stage::Run, "a", ContainerEnd::Exited(5));
        assert!(!p.skip(Stage::Run));
        p.record(Stage::Run, "b", ContainerEnd::Exited(6));
        assert_eq!(p.status(), PipelineStatus::Failed(5));
        assert_eq!(var(&p, "B2C_PIPELINE_FAILED_BY"), "a");
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER"), "b");
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER_EXIT_CODE"), "6");
    }

    #[test]
    fn pipefail_skips_runs_but_not_posts() {
        let mut p = Pipeline::new(true);
        p.record(Stage::Run, "a", ContainerEnd::Exited(0));
        assert!(!p.skip(Stage::Run));
        p.record(Stage::Run, "b", ContainerEnd::Exited(7));
        assert!(p.skip(Stage::Run));
        assert!(!p.skip(Stage::Post));
        p.record(Stage::Post, "post", ContainerEnd::Exited(1));
        assert_eq!(
            p.status().code(),
            7,
            "post containers never change the status"
        );
        assert_eq!(var(&p, "B2C_PIPELINE_STATUS"), "7");
    }

    #[test]
    fn a_failed_setup_shows_status_1() {
        let p = Pipeline::setup_failed();
        assert_eq!(var(&p, "B2C_PIPELINE_STATUS"), "1");
        assert_eq!(var(&p, "B2C_PIPELINE_PREV_CONTAINER"), "");
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "default");
    }

    #[test]
    fn reboot_request_is_the_final_action_and_the_status() {
        let mut p = Pipeline::new(false);
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "default");
        p.record(Stage::Run, "flasher", ContainerEnd::Exited(EXIT_REBOOT));
        assert_eq!(p.status().code(), EXIT_REBOOT);
        assert_eq!(p.shutdown(), ShutdownMode::Reboot);
        assert!(!p.skip(Stage::Run));
        assert_eq!(var(&p, "B2C_PIPELINE_SHUTDOWN_MODE"), "reboot");
        let mut q = Pipeline::new(true);
        q.record(Stage::Post, "p", ContainerEnd::Exited(EXIT_POWEROFF));
        assert_eq!(q.shutdown(), ShutdownMode::PowerOff);
        assert_eq!(
            q.status().code(),
            0,
            "post containers never change the status"
        );
    }
}
