//! b2c-net
