//! b2c-system
