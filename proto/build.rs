//! Generates the Rust code and the reflection descriptor set from `proto/`, with the vendored `protoc` unless
//! a `PROTOC` environment variable names another one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/canvas/saver/v1/saver.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Build scripts are single-threaded; prost-build reads PROTOC from the environment.
        std::env::set_var("PROTOC", protoc);
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("canvas_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
