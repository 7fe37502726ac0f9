//! Compiles the wire contract in `proto/convoy/v1` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary reused from another checkout (a shared target
    // directory) must still read this checkout's protos.
    let proto_root = format!("{}/../proto", std::env::var("CARGO_MANIFEST_DIR")?);
    let files = ["agent.proto", "registration.proto", "fleet.proto", "common.proto"]
        .map(|f| format!("{proto_root}/convoy/v1/{f}"));
    let descriptors = protox::compile(&files, [&proto_root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The generated `connect(dst)` constructor would clash with `AgentService.Connect`; we
        // dial through our own TLS connector anyway.
        .build_transport(false)
        // Small per-stream buffers: see `codec.rs`.
        .codec_path("crate::codec::LeanCodec")
        // JSON and YAML output of the CLI: camelCase like Kubernetes, health as its name.
        .type_attribute(".convoy.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".convoy.v1", "#[serde(rename_all = \"camelCase\")]")
        .field_attribute("health", "#[serde(serialize_with = \"crate::health_name\")]")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={proto_root}");
    Ok(())
}
