//! Strips the module: Rust 1.63's `strip = true` does not reach wasm-ld, and the precompiled
//! standard library's debug sections would otherwise more than double the module's size.
fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if arch == "wasm32" && profile == "release" {
        println!("cargo:rustc-link-arg-bins=--strip-all");
    }
}
