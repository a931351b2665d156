//! Running containers: the OCI runtime spec, crun, and the pipeline.

pub mod crun;
pub mod pipeline;
pub mod spec;
pub mod user;

pub use pipeline::PipelineStatus;
pub use spec::{runtime_spec, ContainerPlan, SpecError};
