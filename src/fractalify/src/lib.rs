//! fractalify's library: the pure pixel kernel. It is a crate of its own (`kernel/`) so that it
//! can be compiled for speed while the rest of the module is compiled for size (see Cargo.toml).
pub use fractalify_kernel::*;
