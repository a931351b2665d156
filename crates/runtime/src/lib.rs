//! Running containers: the OCI runtime spec, crun, the pipeline, and
//! stopping them all when the machine must stop.

pub mod crun;
pub mod engine;
pub mod pipeline;
pub mod spec;
pub mod stop;
pub mod user;

pub use engine::{Container, Engine, RunError, Service};
pub use pipeline::{Pipeline, PipelineStatus, ShutdownMode, Stage};
pub use spec::{runtime_spec, BindMount, ContainerPlan, HostFiles, SpecError};
pub use stop::{stop_running, STOP_GRACE};
