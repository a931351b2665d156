//! b2c-runtime
