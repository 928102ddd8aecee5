//! The protobuf messages of `schema/natter.proto` (package `natter.v1`), and their conversions
//! to and from the domain types.
//!
//! Why the generated code is committed rather than generated in a build script: a build of
//! natter-proto (and of everything that depends on it) then needs only `prost` and its derive, no
//! protobuf compiler and no code generator. The test `generated_code_matches_the_schema` runs the
//! very generator a build script would (`protox`, a pure-Rust protobuf compiler, feeding
//! `prost-build`; both dev-dependencies only) and fails when `generated.rs` is not exactly what
//! the schema gives, so the two cannot drift apart unnoticed. After changing the schema:
//! `NATTER_BLESS=1 cargo test -p natter-proto generated_code` rewrites `generated.rs`.

pub(crate) mod convert;
#[rustfmt::skip]
#[allow(clippy::all)]
mod generated;

pub use convert::ProtoError;
pub use generated::*;

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn generated_code_matches_the_schema() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let fds =
            protox::compile(["natter.proto"], [root.join("schema")]).expect("schema compiles");
        let out = std::env::temp_dir().join(format!("natter-proto-gen-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("temp dir");
        prost_build::Config::new()
            .out_dir(&out)
            .compile_fds(fds)
            .expect("code generation");
        let fresh = std::fs::read_to_string(out.join("natter.v1.rs")).expect("generated code");
        let _ = std::fs::remove_dir_all(&out);
        let committed_path = root.join("src/pb/generated.rs");
        if std::env::var_os("NATTER_BLESS").is_some() {
            std::fs::write(&committed_path, &fresh).expect("write generated.rs");
            return;
        }
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            committed == fresh,
            "src/pb/generated.rs is not what schema/natter.proto gives: run \
             `NATTER_BLESS=1 cargo test -p natter-proto generated_code` and commit the result"
        );
    }
}
