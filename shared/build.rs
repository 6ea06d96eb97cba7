//! Compiles `proto/vigil/v1/*.proto` with protox (pure Rust), so that building
//! Vigil needs no `protoc` on the machine.
//!
//! Two outputs: the messages, client and server as usual (`proto`), and a
//! second server for the collector (`raw_ingest`) whose `Push` takes the
//! request's bytes as received, read in place by `batch::Batch`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/vigil/v1/ingest.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors.clone())?;
    let raw = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("raw");
    std::fs::create_dir_all(&raw)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&raw)
        .extern_path(".vigil.v1", "crate::proto")
        .extern_path(".vigil.v1.PushRequest", "crate::raw_ingest::RawPush")
        .codec_path("crate::raw_ingest::RawCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
