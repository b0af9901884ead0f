use lifeboat_machine::*;

fn backup_spec() -> RunSpec {
    RunSpec::Backup { archive_path: "b/r1.tar.gz".into(), backup_kind: BackupKind::Manual, note: None }
}

fn facts() -> ArchiveFacts {
    ArchiveFacts {
        path: "b/r1.tar.gz".into(),
        sha256: "ab".into(),
        size_bytes: 10,
        file_count: 1,
        entry_count: 2,
        content_bytes: 5,
    }
}

fn outcome_for(effect: &Effect) -> Outcome {
    match effect {
        Effect::Inspect => Outcome::Inspected { running: vec!["app".into(), "db".into()] },
        Effect::WriteArchive { .. } => Outcome::ArchiveWritten(facts()),
        _ => Outcome::Done,
    }
}

#[test]
fn backup_happy_path_visits_every_state_of_a_backup() {
    let mut events = vec![Run::start(backup_spec(), Timestamp(0))];
    let mut run = Run::from_started(1, &events[0]).unwrap();
    let mut states = vec![run.state()];
    let mut t = 0;
    while let Some(effect) = run.poll_effect() {
        t += 1;
        let ev = run.handle_begin(Timestamp(t)).unwrap();
        run.apply(&ev).unwrap();
        events.push(ev);
        let ev = run.handle_outcome(outcome_for(&effect), Timestamp(t)).unwrap();
        run.apply(&ev).unwrap();
        events.push(ev);
        states.push(run.state());
    }
    assert_eq!(
        states,
        [State::Checking, State::Stopping, State::Archiving, State::Recording, State::Restarting, State::Completed]
    );
    assert_eq!(replay(1, &events).unwrap(), run);
    assert_eq!(recover(1, &events).unwrap(), None);
}
