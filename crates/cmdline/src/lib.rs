//! b2c-cmdline
