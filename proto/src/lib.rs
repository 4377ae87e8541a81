//! The gRPC contracts of the canvas services: code generated from `proto/` (messages, clients and servers) and
//! the encoded file descriptor set that server reflection needs so that `grpcurl` works without the `.proto`.

/// `canvas.saver.v1`: the saver's metrics service.
pub mod saver {
    pub mod v1 {
        tonic::include_proto!("canvas.saver.v1");
    }
}

/// Every file of this crate's protos, encoded, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("canvas_descriptor");

#[cfg(test)]
mod tests {
    #[test]
    fn descriptor_set_names_the_service() {
        let text = String::from_utf8_lossy(super::FILE_DESCRIPTOR_SET);
        assert!(text.contains("canvas.saver.v1"));
        assert!(text.contains("SaverMetrics"));
    }
}
