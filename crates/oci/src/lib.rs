//! b2c-oci
