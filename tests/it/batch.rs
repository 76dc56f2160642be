//! Batches: one round trip, results in order, execution stops at the first error.

use std::time::Duration;

use rmi::{Error, Serializer};

use crate::support::{start_daemon, LabProxy};

#[tokio::test]
async fn a_batch_runs_in_order_and_stops_at_the_first_error() {
    for serializer in [Serializer::Bincode, Serializer::MsgPack] {
        let (daemon, lab, _) = start_daemon().await;
        let proxy: LabProxy = LabProxy::builder(&lab)
            .unwrap()
            .serializer(serializer)
            .connect()
            .await
            .unwrap();

        let mut batch = proxy.batch();
        let a = batch.echo(1, 1, "a".into());
        let b = batch.checked_div(9, 3);
        let boom = batch.explode("in a batch".into());
        let never = batch.echo(3, 3, "never".into());
        let results = batch.send().await.unwrap();

        assert_eq!(results.get(&a).unwrap(), (1, 1, "a".to_string()));
        assert_eq!(results.get(&b).unwrap(), Ok(3));
        assert!(matches!(
            results.get(&boom).unwrap_err(),
            Error::Panicked(_)
        ));
        let err = results.get(&never).unwrap_err();
        assert!(
            matches!(err, Error::NotExecuted(_)) && err.is_not_executed(),
            "{err}"
        );
        assert_eq!(results.executed(), 3);
        assert_eq!(
            proxy.calls().await.unwrap(),
            3,
            "the call after the failure never ran"
        );

        // The untyped form, and a batch sent oneway.
        let mut raw = proxy.proxy().batch();
        let n = raw.add::<_, usize>("calls", &[(); 0]);
        assert_eq!(raw.send().await.unwrap().get(&n).unwrap(), 3);
        let mut fire = proxy.batch();
        fire.echo(4, 4, "x".into());
        fire.echo(5, 5, "y".into());
        fire.send_oneway().await.unwrap();
        for _ in 0..500 {
            if proxy.calls().await.unwrap() >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.calls().await.unwrap(), 5, "the oneway batch ran");
        daemon.shutdown();
    }
}
