//! Drops the debug sections from the module: Rust 1.63's `strip = true` does not reach wasm-ld,
//! and the precompiled standard library's DWARF would otherwise more than double the module.
//! The `target_features` and name sections stay: wasm-opt reads the features the module uses,
//! then drops both (without wasm-opt the names stay, and traps name their functions).
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if arch == "wasm32" && profile == "release" {
        println!("cargo:rustc-link-arg-bins=--strip-debug");
    }
}
