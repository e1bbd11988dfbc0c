//! Empty: Cargo resolves a package's `[build-dependencies]` only when it has a build script, and
//! the build-dependencies here are what unify the features of the proc-macros' own dependencies.
fn main() {}
