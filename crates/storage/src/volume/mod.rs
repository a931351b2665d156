//! Named volumes (`b2c.volume`) and their sync with S3 (`b2c.minio`),
//! as boot2container does it with `mc mirror`.

pub mod mirror;
pub mod s3;
pub mod sync;
