//! The call context: caller address, correlation id, annotations both ways, deadline.

use std::time::Duration;

#[rmi::remote]
pub(crate) trait Introspect {
    /// Reports what the method sees of its call.
    async fn whoami(&self) -> Seen;
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Seen {
    peer: String,
    correlation_id: String,
    user: Option<Vec<u8>>,
    time_left_ms: Option<u64>,
    method: String,
}

struct IntrospectObject;

impl Introspect for IntrospectObject {
    async fn whoami(&self) -> Seen {
        let ctx = rmi::context::current().expect("every call has a context");
        ctx.set_response_annotation(*b"SRVR", b"node-1".to_vec());
        Seen {
            peer: ctx.peer().to_string(),
            correlation_id: ctx.correlation_id().to_string(),
            user: ctx.annotation(b"USER").map(|v| v.to_vec()),
            time_left_ms: ctx.time_left().map(|d| d.as_millis() as u64),
            method: ctx.method().to_string(),
        }
    }
}

#[tokio::test]
async fn a_method_sees_its_caller_and_sets_reply_annotations() {
    let daemon = rmi::Daemon::bind("127.0.0.1:0").await.unwrap();
    let uri = daemon
        .register(IntrospectServer::new(IntrospectObject))
        .unwrap();
    tokio::spawn({
        let d = daemon.clone();
        async move { d.serve().await }
    });
    let proxy = IntrospectProxy::connect(&uri).await.unwrap();

    // Without options: a fresh correlation id, no annotations, no deadline.
    let seen = proxy.whoami().await.unwrap();
    assert!(seen.peer.starts_with("127.0.0.1:"), "{seen:?}");
    assert_eq!(seen.method, "whoami");
    assert!(
        seen.user.is_none() && seen.time_left_ms.is_none(),
        "{seen:?}"
    );

    // With a correlation id, an annotation and a deadline, through the untyped proxy to get
    // the reply annotations too.
    let corr = uuid_like();
    let tuned = proxy
        .proxy()
        .with_correlation_id(corr)
        .with_annotation(*b"USER", &b"alice"[..])
        .with_timeout(Duration::from_secs(20));
    let reply = tuned
        .call_full::<_, Seen>("whoami", &[(); 0])
        .await
        .unwrap();
    assert_eq!(reply.value.correlation_id, corr.to_string());
    assert_eq!(reply.correlation_id, corr);
    assert_eq!(reply.value.user.as_deref(), Some(&b"alice"[..]));
    let left = reply.value.time_left_ms.expect("deadline travelled");
    assert!(left > 0 && left <= 20_000, "{left}");
    let srvr = reply
        .annotations
        .iter()
        .find(|(k, _)| k == b"SRVR")
        .map(|(_, v)| v.to_vec());
    assert_eq!(srvr.as_deref(), Some(&b"node-1"[..]));
    daemon.shutdown();
}

fn uuid_like() -> rmi::uuid::Uuid {
    rmi::uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788)
}
