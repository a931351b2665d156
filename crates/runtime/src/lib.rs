//! Running containers: the OCI runtime spec, crun, and the pipeline.

pub mod crun;
pub mod engine;
pub mod pipeline;
pub mod spec;
pub mod user;

pub use engine::{Container, Engine, RunError, Service};
pub use pipeline::{Pipeline, PipelineStatus, ShutdownMode, Stage};
pub use spec::{runtime_spec, BindMount, ContainerPlan, HostFiles, SpecError};
