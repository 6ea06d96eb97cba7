//! The collector's side of `vigil.v1.Ingest`, taking each push as the bytes
//! received (after gzip, within the server's size limit), so that the
//! collector reads them in place ([`crate::batch::Batch`]) and writes the
//! same bytes to its write-ahead log without encoding the batch again.
//! Agents use the ordinary client in [`crate::proto`]; the wire is the same.

use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

use crate::proto::PushResponse;

include!(concat!(env!("OUT_DIR"), "/raw/vigil.v1.rs"));

/// A push's protobuf bytes (`PushRequest`), as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPush(pub Vec<u8>);

/// Decodes a push into [`RawPush`]: one copy out of the receive buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = RawPush;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<RawPush>, Status> {
        let mut bytes = vec![0u8; buf.remaining()];
        buf.copy_to_slice(&mut bytes);
        Ok(Some(RawPush(bytes)))
    }
}

/// `PushResponse` encoded by prost, `PushRequest` kept as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = PushResponse;
    type Decode = RawPush;
    type Encoder = tonic_prost::ProstEncoder<PushResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}
