//! What goes over the wire besides gossipsub's own framing: the request envelope, CBOR
//! byte-string encoding for payloads, and the gossip message id.

use libp2p::{gossipsub, StreamProtocol};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{RequestKind, Response};

/// Request envelope on `/warren/req/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRequest {
    pub(crate) kind: RequestKind,
    #[serde(with = "bytes")]
    pub(crate) body: Vec<u8>,
}

/// Envelope of a direct message on `/warren/direct/1`; the acknowledgement is CBOR `null`
/// (`()`), sent by the receiving mesh as soon as the message is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireDirect {
    #[serde(with = "bytes")]
    pub(crate) data: Vec<u8>,
}

/// The CBOR envelope of a direct message of [`crate::MAX_DIRECT_BYTES`]: a map of one entry
/// (1 byte), the key `"data"` (5), a byte string header with a 4-byte length (5). With it, the
/// read limit admits every message up to the limit and none above (a test checks both).
const DIRECT_ENVELOPE_OVERHEAD: u64 = 11;

/// The codec of `/warren/direct/1`: CBOR, reading at most [`crate::MAX_DIRECT_BYTES`] and its
/// envelope per message (a larger one fails to decode and is never delivered), and a few
/// bytes per acknowledgement.
pub(crate) type DirectCodec = libp2p::request_response::cbor::codec::Codec<WireDirect, ()>;

/// The direct protocol's codec with its size limits.
pub(crate) fn direct_codec() -> DirectCodec {
    DirectCodec::default()
        .set_request_size_maximum(crate::MAX_DIRECT_BYTES as u64 + DIRECT_ENVELOPE_OVERHEAD)
        .set_response_size_maximum(16)
}

/// Decodes the bytes of one inbound direct message stream exactly as the swarm does.
///
/// Errors: the codec's I/O error (too large, not CBOR, not a direct message envelope).
pub(crate) fn decode_direct(bytes: &[u8]) -> std::io::Result<WireDirect> {
    use libp2p::request_response::Codec as _;
    let protocol = StreamProtocol::new(crate::DIRECT_PROTOCOL);
    futures::executor::block_on(
        direct_codec().read_request(&protocol, &mut futures::io::Cursor::new(bytes)),
    )
}

/// The codec of `/warren/req/1`: libp2p's CBOR codec with its default size limits (1 MiB per
/// request, 10 MiB per response), as the swarm's `cbor::Behaviour` builds it.
type Codec = libp2p::request_response::cbor::codec::Codec<WireRequest, Response>;

/// Decodes the bytes of one inbound request stream exactly as the swarm does (the real codec,
/// reading to the end of the stream).
///
/// Errors: the codec's I/O error (too large, not CBOR, not a request envelope).
pub(crate) fn decode_request(bytes: &[u8]) -> std::io::Result<WireRequest> {
    use libp2p::request_response::Codec as _;
    let protocol = StreamProtocol::new(crate::REQUEST_PROTOCOL);
    futures::executor::block_on(
        Codec::default().read_request(&protocol, &mut futures::io::Cursor::new(bytes)),
    )
}

/// Decodes the bytes of one response stream exactly as the swarm does.
///
/// Errors: the codec's I/O error (too large, not CBOR, not a [`Response`]).
pub(crate) fn decode_response(bytes: &[u8]) -> std::io::Result<Response> {
    use libp2p::request_response::Codec as _;
    let protocol = StreamProtocol::new(crate::REQUEST_PROTOCOL);
    futures::executor::block_on(
        Codec::default().read_response(&protocol, &mut futures::io::Cursor::new(bytes)),
    )
}

/// Gossip message id: SHA-256 over (author, the author's sequence number, topic, data), each
/// length-prefixed.
///
/// A forwarded copy keeps its author's signed sequence number, so copies are duplicates; two
/// publications are not, even with equal bytes. Hashing the data alone made a restarted node's
/// first heartbeats (now lease renewals: sequence 1, 2, ... and the same content as in its
/// previous life) look like duplicates of messages still in gossipsub's cache, and peers
/// dropped them.
pub(crate) fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let source = message.source.map(|p| p.to_bytes()).unwrap_or_default();
    let sequence = message.sequence_number.unwrap_or_default().to_be_bytes();
    let topic = message.topic.as_str().as_bytes();
    let mut hasher = Sha256::new();
    for part in [source.as_slice(), &sequence, topic, message.data.as_slice()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    gossipsub::MessageId::new(&hasher.finalize()[..20])
}

/// Serde adapter: `Vec<u8>` as a byte string (CBOR major type 2) instead of serde's default
/// sequence of integers, which costs almost two bytes per byte in CBOR. Deserialising also
/// accepts a sequence of integers, so human-readable formats (JSON) round-trip.
pub(crate) mod bytes {
    use std::fmt;

    use serde::{
        de::{SeqAccess, Visitor},
        Deserializer, Serializer,
    };

    pub(crate) fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The size hint comes from the peer: never pre-allocate more than a little.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_cbor_byte_strings_through_the_real_codec() {
        use libp2p::{request_response::Codec as _, StreamProtocol};
        type C = libp2p::request_response::cbor::codec::Codec<WireRequest, Response>;

        futures::executor::block_on(async {
            let protocol = StreamProtocol::new(crate::REQUEST_PROTOCOL);
            let mut codec = C::default();
            let req = WireRequest {
                kind: RequestKind::Sync,
                body: vec![0xff; 1000],
            };
            let mut buf = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&protocol, &mut buf, req.clone())
                .await
                .unwrap();
            let encoded = buf.into_inner();
            // A sequence of integers would need ~2000 bytes.
            assert!(encoded.len() < 1100, "encoded {} bytes", encoded.len());
            let back = codec
                .read_request(&protocol, &mut futures::io::Cursor::new(encoded))
                .await
                .unwrap();
            assert_eq!(back, req);

            let resp = Response::Ok(vec![7; 500]);
            let mut buf = futures::io::Cursor::new(Vec::new());
            codec
                .write_response(&protocol, &mut buf, resp.clone())
                .await
                .unwrap();
            let encoded = buf.into_inner();
            assert!(encoded.len() < 600, "encoded {} bytes", encoded.len());
            let back = codec
                .read_response(&protocol, &mut futures::io::Cursor::new(encoded))
                .await
                .unwrap();
            assert_eq!(back, resp);

            // Garbage is an error, not a panic.
            let garbage = vec![0x9f, 0xff, 0x00, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff];
            assert!(codec
                .read_request(&protocol, &mut futures::io::Cursor::new(garbage))
                .await
                .is_err());
        });

        // JSON keeps working (sequence form).
        let resp = Response::Ok(vec![1, 2, 3]);
        let json = serde_json::to_string(&resp).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), resp);
    }

    #[test]
    fn direct_messages_up_to_the_limit_decode_and_larger_ones_do_not() {
        use libp2p::request_response::Codec as _;

        let encode = |data: Vec<u8>| {
            futures::executor::block_on(async {
                let protocol = StreamProtocol::new(crate::DIRECT_PROTOCOL);
                let mut buf = futures::io::Cursor::new(Vec::new());
                direct_codec()
                    .write_request(&protocol, &mut buf, WireDirect { data })
                    .await
                    .unwrap();
                buf.into_inner()
            })
        };
        let max = vec![0xa5; crate::MAX_DIRECT_BYTES];
        assert_eq!(decode_direct(&encode(max.clone())).unwrap().data, max);
        // One byte more does not fit the codec's read limit.
        assert!(decode_direct(&encode(vec![0xa5; crate::MAX_DIRECT_BYTES + 1])).is_err());
        assert!(decode_direct(b"\xff\x00garbage").is_err());

        // The acknowledgement round-trips within its limit.
        futures::executor::block_on(async {
            let protocol = StreamProtocol::new(crate::DIRECT_PROTOCOL);
            let mut buf = futures::io::Cursor::new(Vec::new());
            direct_codec()
                .write_response(&protocol, &mut buf, ())
                .await
                .unwrap();
            let bytes = buf.into_inner();
            direct_codec()
                .read_response(&protocol, &mut futures::io::Cursor::new(bytes))
                .await
                .unwrap();
        });
    }

    #[test]
    fn message_id_depends_on_author_sequence_topic_and_data() {
        let a = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let b = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let msg = |source, topic: &str, data: &[u8], seq| gossipsub::Message {
            source: Some(source),
            data: data.to_vec(),
            sequence_number: Some(seq),
            topic: gossipsub::TopicHash::from_raw(topic),
        };
        let base = message_id(&msg(a, "t", b"hb", 1));
        // A forwarded copy (same author, same sequence number) is the same message...
        assert_eq!(base, message_id(&msg(a, "t", b"hb", 1)));
        // ...a new publication with the same bytes (a restarted node's renewal) is not.
        assert_ne!(base, message_id(&msg(a, "t", b"hb", 2)));
        assert_ne!(base, message_id(&msg(b, "t", b"hb", 1)));
        assert_ne!(base, message_id(&msg(a, "u", b"hb", 1)));
        assert_ne!(base, message_id(&msg(a, "t", b"hc", 1)));
    }
}
