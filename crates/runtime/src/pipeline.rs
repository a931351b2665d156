//! The verdict of a boot.

/// The status CI reads from `Execution is over, pipeline status: N`: the
/// exit code of the first failing container, 0 when all passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStatus {
    code: i32,
}

/// Status of a boot whose setup failed before a container could run.
pub const SETUP_FAILED: i32 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
