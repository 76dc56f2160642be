//! A plain `Vec<u8>` parameter or result of a `#[remote]` method crosses as bytes in every
//! serializer, and on bincode's wire exactly as a sequence of `u8`, so untyped callers and
//! older peers still understand it.

use std::time::Duration;

use rmi::{remote, Daemon, RemoteError, RemoteErrorKind, Serializer};

#[remote]
trait Bytes {
    /// The data reversed, and its length.
    async fn reverse(&self, data: Vec<u8>, tag: u32) -> Vec<u8>;
    /// `n` copies of `byte`, or an error raised for `n` over a megabyte.
    #[rmi(raises)]
    async fn fill(&self, byte: u8, n: usize) -> Result<Vec<u8>, RemoteError>;
    /// The sum of the bytes.
    async fn sum(&self, data: std::vec::Vec<u8>) -> u64;
}

struct Reverser;

impl Bytes for Reverser {
    async fn reverse(&self, mut data: Vec<u8>, tag: u32) -> Vec<u8> {
        data.reverse();
        data.extend_from_slice(&tag.to_le_bytes()[..1]);
        data
    }

    async fn fill(&self, byte: u8, n: usize) -> Result<Vec<u8>, RemoteError> {
        if n > 1 << 20 {
            return Err(RemoteError::new(
                RemoteErrorKind::Other,
                "builtins.ValueError",
                format!("{n} bytes is too many"),
            ));
        }
        Ok(vec![byte; n])
    }

    async fn sum(&self, data: Vec<u8>) -> u64 {
        // How the bytes travelled is no annotation of the caller's, whether or not the daemon
        // read them apart: one seen here spoils the sum.
        let ctx = rmi::context::current().expect("call context");
        let seen = ctx
            .annotation(&rmi::protocol::names::BULK_ANNOTATION)
            .is_some();
        data.iter().map(|&b| u64::from(b)).sum::<u64>() + u64::from(seen)
    }
}

async fn daemon() -> (Daemon, rmi::Uri) {
    let daemon = Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon.register(BytesServer::new(Reverser)).unwrap();
    tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    (daemon, uri)
}

#[tokio::test]
async fn byte_vectors_cross_in_every_serializer_empty_small_and_large() {
    let (daemon, uri) = daemon().await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    for ser in [
        Serializer::Bincode,
        Serializer::MsgPack,
        Serializer::Serpent,
        Serializer::Json,
        Serializer::Marshal,
    ] {
        let proxy: BytesProxy = BytesProxy::builder(&uri)
            .unwrap()
            .serializer(ser)
            .connect()
            .await
            .unwrap();
        assert_eq!(proxy.reverse(vec![], 7).await.unwrap(), vec![7], "{ser:?}");
        assert_eq!(
            proxy.reverse(vec![1, 2, 255], 9).await.unwrap(),
            vec![255, 2, 1, 9],
            "{ser:?}"
        );
        let mut want = big.clone();
        want.reverse();
        want.push(0);
        // 3 MB each way within a minute: serpent's reader once validated the rest of the
        // input for every character of a string, and took 570 s for this on a 2-core machine.
        let back = tokio::time::timeout(Duration::from_secs(60), proxy.reverse(big.clone(), 256))
            .await
            .unwrap_or_else(|_| panic!("{ser:?}: 3 MB of bytes took over a minute"))
            .unwrap();
        assert!(back == want, "{ser:?}");
        assert_eq!(proxy.fill(3, 0).await.unwrap(), Vec::<u8>::new(), "{ser:?}");
        assert_eq!(proxy.fill(3, 4).await.unwrap(), vec![3; 4], "{ser:?}");
        let err = proxy.fill(3, 2 << 20).await.unwrap_err();
        assert!(err.to_string().contains("too many"), "{ser:?}: {err}");
        assert_eq!(proxy.sum(vec![200, 100]).await.unwrap(), 300, "{ser:?}");

        // Batched calls carry bytes too.
        let mut batch = proxy.batch();
        let a = batch.reverse(vec![4, 5], 6);
        let b = batch.sum(vec![1; 10]);
        let results = batch.send().await.unwrap();
        assert_eq!(results.get(&a).unwrap(), vec![5, 4, 6], "{ser:?}");
        assert_eq!(results.get(&b).unwrap(), 10, "{ser:?}");
    }
    daemon.shutdown();
}

#[tokio::test]
async fn untyped_callers_send_and_read_byte_vectors_as_sequences_of_u8() {
    let (daemon, uri) = daemon().await;
    for ser in [Serializer::Bincode, Serializer::MsgPack] {
        let proxy = rmi::Proxy::builder(uri.clone())
            .serializer(ser)
            .connect::<rmi::Proxy>()
            .await
            .unwrap();
        // A plain `Vec<u8>` (no serde_bytes) on the caller's side, both ways.
        let back: Vec<u8> = proxy
            .call("reverse", &(vec![1u8, 2, 3], 4u32))
            .await
            .unwrap();
        assert_eq!(back, [3, 2, 1, 4], "{ser:?}");
        let back: Vec<u8> = proxy.call("fill", &(9u8, 2usize)).await.unwrap();
        assert_eq!(back, [9, 9], "{ser:?}");
    }
    // bincode's wire is the same either way: a length, then the bytes.
    let seq = Serializer::Bincode
        .encode(&(vec![1u8, 2, 3], 4u32))
        .unwrap();
    let bytes = Serializer::Bincode
        .encode(&(serde_bytes::Bytes::new(&[1, 2, 3]), 4u32))
        .unwrap();
    assert_eq!(seq, bytes);
    daemon.shutdown();
}

/// The way a large `Vec<u8>` argument travels, seen on the wire: its INVOKE announces where
/// the bytes lie (`BULK`), so that the daemon reads them into a buffer of their own and hands
/// that buffer to the method. (helper-149 #3: the tests checked only that the bytes arrived,
/// which they do just as well read whole and copied out.)
#[tokio::test]
async fn a_large_byte_argument_is_announced_where_it_lies_in_its_invoke() {
    use rmi::protocol::frame::{bulk_in, MessageType, Protocol};
    let (plain, uri) = self::daemon().await;
    let port = match uri.location() {
        Some(rmi::Location::Tcp { port, .. }) => *port,
        other => panic!("{other:?}"),
    };
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    for ser in [Serializer::Bincode, Serializer::MsgPack] {
        let (relay, recorded) = crate::support::recording_relay(port).await;
        let via = rmi::Uri::tcp(uri.object().unwrap(), "127.0.0.1", relay);
        let proxy: BytesProxy = BytesProxy::builder(&via)
            .unwrap()
            .serializer(ser)
            .connect()
            .await
            .unwrap();
        proxy.sum(big.clone()).await.unwrap();
        let sent = recorded.lock().await.clone();
        let mut rest = &sent[..];
        let mut announced = None;
        while !rest.is_empty() {
            let protocol = Protocol::detect(rest).unwrap();
            let header = protocol.parse_header(rest, 64 << 20).unwrap();
            let (frame, after) = rest.split_at(header.total_len());
            rest = after;
            if header.msg_type != MessageType::Invoke {
                continue;
            }
            let annotations = &frame[protocol.header_size()..][..header.ann_len as usize];
            let payload = &frame[protocol.header_size() + header.ann_len as usize..];
            if let Some((offset, len)) = bulk_in(&header, annotations, 64 << 10) {
                announced = Some(&payload[offset..offset + len] == big.as_slice());
            }
        }
        assert_eq!(
            announced,
            Some(true),
            "{ser:?}: no BULK announcing the argument"
        );
    }
    plain.shutdown();
}

#[tokio::test]
async fn large_byte_arguments_and_results_arrive_whole_signed_compressed_and_batched() {
    // A large `Vec<u8>` argument or result is sent from its own buffer, after the rest of the
    // message: the peer must see the same bytes however the message is framed.
    let secret = rmi::SharedSecret::new("large bytes");
    let signed = Daemon::builder().shared_secret(secret.clone());
    let daemon = signed.bind("127.0.0.1:0").await.unwrap();
    let signed_uri = daemon.register(BytesServer::new(Reverser)).unwrap();
    tokio::spawn({
        let daemon = daemon.clone();
        async move { daemon.serve().await }
    });
    let (plain, plain_uri) = self::daemon().await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
    let mut reversed = big.clone();
    reversed.reverse();
    reversed.push(5);
    for ser in [Serializer::Bincode, Serializer::MsgPack] {
        for (how, builder) in [
            ("plain", BytesProxy::builder(&plain_uri).unwrap()),
            (
                "compressed",
                BytesProxy::builder(&plain_uri).unwrap().compression(true),
            ),
            (
                "signed",
                BytesProxy::builder(&signed_uri)
                    .unwrap()
                    .shared_secret(secret.clone()),
            ),
        ] {
            let proxy: BytesProxy = builder.serializer(ser).connect().await.unwrap();
            // The bytes last, then followed by another argument.
            assert_eq!(proxy.sum(big.clone()).await.unwrap(), sum, "{ser:?} {how}");
            assert!(
                proxy.reverse(big.clone(), 5).await.unwrap() == reversed,
                "{ser:?} {how}"
            );
            // Several at once on one connection, and in a batch.
            let (a, b) = tokio::join!(proxy.sum(big.clone()), proxy.sum(vec![1; 70_000]));
            assert_eq!((a.unwrap(), b.unwrap()), (sum, 70_000), "{ser:?} {how}");
            let mut batch = proxy.batch();
            let x = batch.sum(big.clone());
            let y = batch.reverse(vec![1, 2], 3);
            let z = batch.reverse(big.clone(), 5);
            let results = batch.send().await.unwrap();
            assert_eq!(results.get(&x).unwrap(), sum, "{ser:?} {how}");
            assert_eq!(results.get(&y).unwrap(), vec![2, 1, 3], "{ser:?} {how}");
            assert!(results.get(&z).unwrap() == reversed, "{ser:?} {how}");
            // Large results come back whole too, raised or not.
            assert!(
                proxy.fill(9, 1 << 20).await.unwrap() == vec![9; 1 << 20],
                "{ser:?} {how}"
            );
        }
    }
    daemon.shutdown();
    plain.shutdown();
}

#[tokio::test]
async fn a_daemon_reads_announced_bytes_the_same_wherever_the_announcement_puts_them() {
    // An rmi proxy announces where a large `Vec<u8>` argument lies in its payload (`BULK`),
    // and the daemon reads those bytes into a buffer of their own. What the announcement says
    // is never trusted: a raw client announcing any region (the object id, part of the
    // bytes, their length prefix and more, past the end) is answered as if it had said nothing.
    use rmi::protocol::frame::MessageType;
    use rmi::protocol::names::BULK_ANNOTATION;
    use rmi::transport::FrameReader;
    use tokio::io::AsyncWriteExt;

    let (daemon, uri) = daemon().await;
    let object = uri.object().unwrap().to_owned();
    let mut raw = crate::support::dial(&uri).await;
    crate::support::connect_handshake(&mut raw, &object).await;
    let (rd, mut wr) = raw.into_split();
    let mut replies = FrameReader::new(rd, 1 << 24);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
    let mut reversed = big.clone();
    reversed.reverse();
    reversed.push(9);
    let limits = rmi::DecodeLimits::default();
    let mut seq = 0;
    for ser in [Serializer::Bincode, Serializer::MsgPack] {
        for method in ["sum", "reverse"] {
            let bytes = serde_bytes::ByteBuf::from(big.clone());
            let payload = if method == "sum" {
                rmi::protocol::codec::encode_invoke(ser, &object, method, &(bytes,))
            } else {
                // The bytes followed by another argument.
                rmi::protocol::codec::encode_invoke(ser, &object, method, &(bytes, 9u32))
            }
            .unwrap();
            let truth = payload.windows(64).position(|w| w == &big[..64]).unwrap() as u32;
            let regions: [(u32, u32); 7] = [
                (truth, big.len() as u32),
                (0, 100_000),
                (truth + 1_000, 100_000),
                (truth - 3, big.len() as u32 + 3),
                (truth + 100_000, 100_000),
                (truth, big.len() as u32 + 1),
                (u32::MAX - 10, 100_000),
            ];
            for (offset, len) in regions {
                seq += 1;
                let mut msg = rmi::protocol::frame::Message::new(
                    MessageType::Invoke,
                    ser.id(),
                    0,
                    seq,
                    payload.clone(),
                );
                let mut value = offset.to_be_bytes().to_vec();
                value.extend_from_slice(&len.to_be_bytes());
                msg.annotations.push((BULK_ANNOTATION, value.into()));
                wr.write_all(&msg.to_bytes()).await.unwrap();
                let reply = replies.read_frame().await.unwrap().expect("a reply");
                let what = format!("{ser:?} {method}, BULK at {offset} for {len}");
                assert_eq!(reply.msg_type, MessageType::Result, "{what}");
                assert_eq!(reply.seq, seq);
                assert_eq!(
                    reply.flags & rmi::protocol::frame::FLAGS_EXCEPTION,
                    0,
                    "{what}"
                );
                if method == "sum" {
                    let got: u64 = ser.decode(&reply.payload, &limits).unwrap();
                    assert_eq!(got, sum, "{what}");
                } else {
                    let got: serde_bytes::ByteBuf = ser.decode(&reply.payload, &limits).unwrap();
                    assert!(got.into_vec() == reversed, "{what}");
                }
            }
        }
    }
    // A proxy, which announces its bytes truthfully, is served on the same daemon; a large
    // result, announced by the daemon, reaches it whole, and the announcement is no annotation
    // of the caller's.
    let proxy = BytesProxy::connect(&uri).await.unwrap();
    assert_eq!(proxy.sum(big).await.unwrap(), sum);
    for ser in [Serializer::Bincode, Serializer::MsgPack] {
        let untyped = rmi::Proxy::builder(uri.clone())
            .serializer(ser)
            .connect::<rmi::Proxy>()
            .await
            .unwrap();
        let reply = untyped
            .call_full::<_, serde_bytes::ByteBuf>("fill", &(7u8, 300_000usize))
            .await
            .unwrap();
        assert!(reply.value.iter().all(|&b| b == 7) && reply.value.len() == 300_000);
        assert!(
            reply
                .annotations
                .iter()
                .all(|(id, _)| *id != BULK_ANNOTATION),
            "{ser:?}"
        );
    }
    daemon.shutdown();
}
