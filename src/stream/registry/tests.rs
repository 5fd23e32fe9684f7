use super::*;

fn registry(dir: &std::path::Path) -> Arc<Registry> {
    Registry::open(RegistryConfig {
        dir: dir.to_path_buf(),
        fsync: false,
        clock: crate::runtime::Clock::system(),
        max_streams: 8,
    })
    .unwrap()
}

fn create(name: &str, ct: &str, body: &[u8]) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        content_type: Some(ct.into()),
        body: body.to_vec(),
        ..CreateRequest::default()
    }
}

fn append(body: &[u8]) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        body: body.to_vec(),
        ..AppendRequest::default()
    }
}

fn text(s: &NamedStream, from: Offset) -> String {
    let batch = s.read(from, usize::MAX).unwrap();
    batch
        .bodies
        .iter()
        .map(|b| match b {
            Body::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
            Body::Json(_) => panic!("not a byte stream"),
        })
        .collect()
}

fn producer(seq: u64) -> Option<ProducerTuple> {
    Some(ProducerTuple {
        id: "p".into(),
        epoch: 0,
        seq,
    })
}

#[tokio::test]
async fn writer_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = registry(dir.path());
        r.create(create("a", "text/plain", b"x")).await.unwrap();
        let s = r.get("a").await.unwrap();
        for seq in 0..2 {
            let req = AppendRequest {
                producer: producer(seq),
                stream_seq: Some(format!("{seq:03}")),
                ..append(b"y")
            };
            assert!(matches!(
                s.append(req).await.unwrap(),
                AppendOutcome::Appended { .. }
            ));
        }
    }
    let r = registry(dir.path());
    let s = r.get("a").await.unwrap();
    assert_eq!(text(&s, Offset(0)), "xyy");
    // The retried batch is known after the restart: no duplicate.
    let retry = AppendRequest {
        producer: producer(1),
        ..append(b"y")
    };
    assert!(matches!(
        s.append(retry).await.unwrap(),
        AppendOutcome::Duplicate { last_seq: 1, .. }
    ));
    let regress = AppendRequest {
        stream_seq: Some("001".into()),
        ..append(b"z")
    };
    assert!(matches!(
        s.append(regress).await,
        Err(StreamError::SeqRegression { .. })
    ));
    assert_eq!(text(&s, Offset(0)), "xyy");
}

#[tokio::test]
async fn close_only_keeps_the_tail_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tail = {
        let r = registry(dir.path());
        r.create(create("c", "text/plain", b"data")).await.unwrap();
        let s = r.get("c").await.unwrap();
        let tail = s.tail();
        let close = AppendRequest {
            close: true,
            ..AppendRequest::default()
        };
        assert_eq!(
            s.append(close).await.unwrap(),
            AppendOutcome::Closed { next: tail }
        );
        tail
    };
    let r = registry(dir.path());
    let s = r.get("c").await.unwrap();
    assert!(s.is_closed());
    assert_eq!(s.tail(), tail);
    assert!(matches!(
        s.append(append(b"more")).await,
        Err(StreamError::Closed { .. })
    ));
    let at_tail = s.read(tail, 1024).unwrap();
    assert!(at_tail.bodies.is_empty() && at_tail.closed && at_tail.up_to_date);
}

#[tokio::test]
async fn forks_stitch_source_data_and_ignore_later_source_appends() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    r.create(create("src", "text/plain", b"hello"))
        .await
        .unwrap();
    let src = r.get("src").await.unwrap();
    src.append(append(b" world")).await.unwrap();
    let fork = CreateRequest {
        name: "fork".into(),
        fork: Some(ForkRequest {
            source: "src".into(),
            offset: Some(Offset(1)),
            sub_offset: 3,
        }),
        body: b"!".to_vec(),
        ..CreateRequest::default()
    };
    r.create(fork).await.unwrap();
    src.append(append(b" later")).await.unwrap();
    let f = r.get("fork").await.unwrap();
    assert_eq!(text(&f, Offset(0)), "hello wo!");
    assert_eq!(f.config().content_type, "text/plain");
    drop((src, f));

    // Deleting the source while the fork reads it is soft; deleting the
    // fork then removes both.
    r.delete("src").await.unwrap();
    assert!(matches!(r.get("src").await, Err(StreamError::Gone)));
    assert!(matches!(
        r.create(create("src", "text/plain", b"")).await,
        Err(StreamError::Conflict(_))
    ));
    let r = registry(dir.path());
    assert_eq!(text(&r.get("fork").await.unwrap(), Offset(0)), "hello wo!");
    r.delete("fork").await.unwrap();
    assert!(r.is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(next_id::FILE)]);
}

#[tokio::test]
async fn json_streams_keep_message_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    r.create(create("j", "application/json", b"[]"))
        .await
        .unwrap();
    let s = r.get("j").await.unwrap();
    let req = |body: &str| AppendRequest {
        content_type: Some("application/json; charset=utf-8".into()),
        body: body.as_bytes().to_vec(),
        ..AppendRequest::default()
    };
    s.append(req(r#"[{"a":1},[2,3]]"#)).await.unwrap();
    s.append(req("4")).await.unwrap();
    assert!(matches!(
        s.append(req("[]")).await,
        Err(StreamError::BadRequest(_))
    ));
    assert!(matches!(
        s.append(req("{nope")).await,
        Err(StreamError::BadRequest(_))
    ));
    let batch = s.read(Offset(0), usize::MAX).unwrap();
    let messages: Vec<&[u8]> = batch
        .bodies
        .iter()
        .flat_map(|b| match b {
            Body::Json(m) => m.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            Body::Bytes(_) => panic!("not JSON"),
        })
        .collect();
    assert_eq!(render_json(messages), br#"[{"a":1},[2,3],4]"#);
}

#[tokio::test]
async fn the_stream_limit_refuses_new_streams_until_one_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    for i in 0..8 {
        r.create(create(&format!("s{i}"), "text/plain", b""))
            .await
            .unwrap();
    }
    let refused = r.create(create("one-too-many", "text/plain", b"")).await;
    assert!(
        matches!(refused, Err(StreamError::TooMany { limit: 8 })),
        "a ninth stream was not refused"
    );
    assert!(matches!(
        r.get("one-too-many").await,
        Err(StreamError::NotFound)
    ));
    // Re-creating an existing stream with the same config is not a new one.
    r.create(create("s0", "text/plain", b"")).await.unwrap();
    r.delete("s3").await.unwrap();
    r.create(create("one-too-many", "text/plain", b""))
        .await
        .unwrap();
    assert_eq!(r.len(), 8);
}

/// A client that disconnects mid-append drops the request's future; its
/// retry must find the first append recorded if it started, and append
/// once if it never did (it may still wait for the previous append's
/// lock when dropped): never twice, never not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_abandoned_by_its_client_still_fences_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    r.create(create("a", "text/plain", b"")).await.unwrap();
    let s = r.get("a").await.unwrap();
    for seq in 0..20 {
        let req = || AppendRequest {
            producer: producer(seq),
            ..append(b"z")
        };
        // Polled once, then dropped: the append is under way.
        let _ = tokio::time::timeout(std::time::Duration::ZERO, s.append(req())).await;
        let retry = s.append(req()).await.unwrap();
        assert!(
            match retry {
                AppendOutcome::Duplicate { last_seq, .. } => last_seq == seq,
                AppendOutcome::Appended { next, .. } => next == Offset(seq + 1),
                _ => false,
            },
            "seq {seq}: {retry:?}"
        );
    }
    assert_eq!(text(&s, Offset(0)), "z".repeat(20));
}

/// Stream TTL and expiry time, in paused time: a sliding TTL restarts at
/// every touch, an absolute expiry does not, and the sweep removes both
/// once due.
#[tokio::test(start_paused = true)]
async fn streams_expire_by_ttl_and_expiry_time_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = crate::runtime::Clock::simulated(1_700_000_000_000_000);
    let r = Registry::open(RegistryConfig {
        dir: dir.path().to_path_buf(),
        fsync: false,
        clock: clock.clone(),
        max_streams: 8,
    })
    .unwrap();
    let ttl = CreateRequest {
        expiry: Some(Expiry::TtlSecs(60)),
        ..create("ttl", "text/plain", b"")
    };
    let at = CreateRequest {
        expiry: Some(Expiry::At(clock.now_millis() + 90_000)),
        ..create("at", "text/plain", b"")
    };
    r.create(ttl).await.unwrap();
    r.create(at).await.unwrap();
    let advance = |secs| tokio::time::advance(std::time::Duration::from_secs(secs));
    advance(59).await;
    assert_eq!(r.sweep_expired().await.unwrap(), 0);
    r.get("ttl").await.unwrap().touch(); // the TTL starts again
    advance(59).await; // 118 s: "at" is past its time, "ttl" is not
    assert_eq!(r.sweep_expired().await.unwrap(), 1);
    assert!(r.get("at").await.is_err());
    assert!(r.get("ttl").await.is_ok());
    advance(2).await; // 61 s since the touch
    assert!(
        r.get("ttl").await.is_err(),
        "expired streams are gone on read"
    );
    assert_eq!(r.len(), 0, "{:?}", r.sweep_expired().await);
}

async fn new_id(r: &Registry, name: &str) -> u64 {
    match r.create(create(name, "text/plain", b"x")).await.unwrap() {
        Created::New(s) | Created::Existing(s) => s.id,
    }
}

/// Deleting the newest streams and restarting never hands their ids out
/// again, however many are deleted (ids are in ETags).
#[tokio::test]
async fn a_deleted_newest_stream_id_is_not_reused_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    for round in 0..4 {
        let r = registry(dir.path());
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(new_id(&r, &format!("s{round}-{i}")).await);
        }
        for id in &ids {
            assert!(seen.insert(*id), "round {round}: id {id} handed out twice");
        }
        // Delete every stream of this round, newest first.
        for i in (0..3).rev() {
            r.delete(&format!("s{round}-{i}")).await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_unreadable_named_stream_is_refused_then_set_aside_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, kept, fork) = {
        let r = registry(dir.path());
        let bad = new_id(&r, "bad").await;
        let kept = new_id(&r, "kept").await;
        let fork = CreateRequest {
            fork: Some(ForkRequest {
                source: "bad".into(),
                offset: None,
                sub_offset: 0,
            }),
            ..create("fork", "text/plain", b"")
        };
        let Created::New(f) = r.create(fork).await.unwrap() else {
            panic!("new")
        };
        (bad, kept, f.id)
    };
    let bad_dir = dir.path().join(format!("{bad:016x}"));
    std::fs::write(bad_dir.join(meta::FILE), b"{ not json").unwrap();
    let err = Registry::open(RegistryConfig {
        dir: dir.path().to_path_buf(),
        fsync: false,
        clock: crate::runtime::Clock::system(),
        max_streams: 8,
    })
    .err()
    .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{bad:016x}")) && msg.contains("streamdb repair"),
        "{msg}"
    );

    let done = repair::repair(dir.path()).unwrap();
    let aside: Vec<_> = done.iter().filter_map(|r| r.set_aside.clone()).collect();
    assert_eq!(aside.len(), 2, "the stream and its fork: {done:?}");
    assert!(aside[0].0.ends_with(format!("{bad:016x}.damaged")));
    assert!(aside[1].1.contains("fork"), "{:?}", aside[1]);
    assert!(aside[0].0.join(meta::FILE).exists(), "kept, not deleted");
    let r = registry(dir.path());
    assert_eq!(text(&r.get("kept").await.unwrap(), Offset(0)), "x");
    assert!(r.get("bad").await.is_err());
    let next = new_id(&r, "again").await;
    assert!(next > kept.max(fork), "{next}");
}

#[tokio::test]
async fn an_undecodable_named_stream_record_is_refused_then_set_aside_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let r = registry(dir.path());
        let id = new_id(&r, "s").await;
        let s = r.get("s").await.unwrap();
        s.append(append(b"y")).await.unwrap();
        id
    };
    // Record 1 with a valid checksum but a body that is not a record.
    let sdir = dir.path().join(format!("{id:016x}"));
    let path = sdir.join(crate::stream::segment::file_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    let s = crate::stream::segment::scan_bytes(&bytes).unwrap();
    let last = s.frames().last().unwrap().clone();
    bytes.truncate(last.pos as usize);
    crate::stream::segment::encode_record(&mut bytes, s.format, last.seq, &[0xee; 9]);
    std::fs::write(&path, bytes).unwrap();
    let err = Registry::open(RegistryConfig {
        dir: dir.path().to_path_buf(),
        fsync: false,
        clock: crate::runtime::Clock::system(),
        max_streams: 8,
    })
    .err()
    .expect("refused");
    assert!(err.to_string().contains("streamdb repair"), "{err}");
    let done = repair::repair(dir.path()).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].log[0].lost, vec![last.seq..last.seq + 1]);
    let r = registry(dir.path());
    let s = r.get("s").await.unwrap();
    assert_eq!(text(&s, Offset(0)), "x");
    s.append(append(b"z")).await.unwrap();
    assert_eq!(text(&s, Offset(0)), "xz");
    assert_eq!(
        s.tail(),
        Offset(last.seq + 2),
        "the lost offset is not reused"
    );
}
