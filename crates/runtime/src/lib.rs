//! Running containers: the OCI runtime spec, crun, the pipeline loop
//! ([`run_pipeline`]) over a [`b2c_cmdline::BootPlan`], and stopping them
//! all when the machine must stop ([`stop_running`]).

pub mod console;
pub mod container_init;
pub mod crun;
pub mod engine;
pub mod host;
pub mod pipeline;
mod run;
pub mod servicelog;
pub mod spec;
pub mod stop;
pub mod user;

pub use console::Stdio;
pub use engine::{Engine, Inputs, RunError, Service};
pub use host::{Host, Launch, System};
pub use pipeline::{ContainerEnd, Pipeline, PipelineStatus, ShutdownMode, EXIT_TIMED_OUT};
pub use run::{run_pipeline, run_pipeline_with, ContainerHooks, NoHooks, Outcome, Prepared, Site};
pub use spec::{runtime_spec, HostFiles, SpecError, SpecInputs};
pub use stop::{stop_running, StopPolicy, STOP_GRACE};
