//! The gRPC codec of every Convoy service: prost, with small starting buffers. tonic keeps an
//! encode and a decode buffer per stream for the stream's life, each starting at 8 KiB; a hub
//! holds one agent stream per cluster, and most messages on it (heartbeats, Unchanged, the
//! assignment naming apps by digest) are a few hundred bytes.
//!
//! A buffer grows to fit what it holds and never shrinks. The encode side hands each message to
//! the transport as soon as it is encoded, instead of gathering up to 32 KiB first: gathered, an
//! agent's first assignment (an `AppContent` part per app, then the assignment) grew its
//! stream's buffer to all of them together, about 6 KiB per idle agent in `bench_fleet`, kept
//! for as long as the agent stays connected. What one message can grow it to, the hub bounds by
//! sending app objects in small parts.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffers.
const BUFFER_BYTES: usize = 1024;
/// Encoded bytes gathered before they are handed to the transport: one message at a time.
const YIELD_BYTES: usize = BUFFER_BYTES;

/// [`tonic_prost::ProstCodec`] with [`BUFFER_BYTES`] starting buffers (named by the generated
/// services through `codec_path` in build.rs).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER_BYTES, YIELD_BYTES))
    }
}
