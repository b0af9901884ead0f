//! The scheduler of `lifeboat auto-backup daemon`: when the next runs are (pure, generic over the
//! time zone), and the loop that waits for them, behind a [`Clock`] and a [`Job`] so tests drive
//! it through days of fake time without sleeping.
//!
//! # Time zones and daylight saving time
//!
//! A cron expression is read in the host's local time zone (`chrono::Local`, which follows `TZ`
//! and `/etc/localtime`), as cron does. On the day clocks spring forward, a wall-clock time in
//! the skipped hour does not exist: a `30 2 * * *` schedule in Europe/Berlin runs at 03:00 on that
//! day (croner moves a fixed-time job to the first instant after the gap), once, and at 02:30
//! again on the next day. On the day clocks fall back, 02:30 happens twice and the job runs once,
//! at the first of the two. Interval schedules (`*/15 * * * *`) skip the missing hour and run in
//! both copies of the repeated one. The tests below check all of this on a zone with Berlin's
//! 2025 transitions.
//!
//! # The loop
//!
//! One iteration: read the schedule (so `auto-backup enable/disable/schedule` take effect without
//! a restart), work out when the next run is due, and either run it or sleep until it is due, at
//! most [`POLL`] at a time. Runs never overlap: the loop awaits each run before it looks at the
//! clock again. After a run, or after a run was due while disabled, the next one is computed from
//! the current time, so a host that was suspended (or a run that outlasted several periods) gets
//! one run, not a burst of the missed ones. The sleep is capped at [`POLL`] because tokio's timers
//! follow the monotonic clock, which stops while the host is suspended: the cap bounds how late a
//! run due during a suspend starts after the resume.
//!
//! Shutdown (SIGTERM, SIGINT) stops the loop from taking new runs. The loop never drops a run in
//! progress: it awaits its end (the run itself settles on the signal, see `crate::signals`:
//! services restarted, run journaled) and then returns.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use croner::Cron;
use std::future::Future;

/// The longest the loop sleeps before it reads the schedule and the clock again.
pub const POLL: TimeDelta = TimeDelta::seconds(60);

/// The next `n` times `cron` fires for `project`, in its schedule's time zone (`auto_backup.timezone`,
/// else local time), formatted for people.
pub fn next_runs_for(project: &crate::project::Project, cron: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let cron = crate::config::parse_cron(cron)?;
    Ok(match project.config.auto_backup.zone()? {
        Some(zone) => formatted(&cron, Utc::now().with_timezone(&zone), n),
        None => formatted(&cron, chrono::Local::now(), n),
    })
}

fn formatted<Tz: TimeZone>(cron: &Cron, now: DateTime<Tz>, n: usize) -> Vec<String>
where
    Tz::Offset: std::fmt::Display,
{
    next_runs(cron, &now, n).iter().map(|t| t.format("%Y-%m-%d %H:%M %Z").to_string()).collect()
}

/// The next `n` times `cron` fires strictly after `after`, in `after`'s time zone.
pub fn next_runs<Tz: TimeZone>(cron: &Cron, after: &DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
    // croner works to the second; a run that ends at 02:00:00.4 must not be due again at 02:00:00.
    cron.iter_after(after.clone()).skip_while(|t| t <= after).take(n).collect()
}

/// The next time `cron` fires strictly after `now`, reading the expression in `tz`.
pub fn next_run<Tz: TimeZone>(cron: &Cron, now: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
    next_runs(cron, &now.with_timezone(tz), 1).into_iter().next().map(|t| t.with_timezone(&Utc))
}

/// Where the loop gets the time and how it waits.
pub trait Clock {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at `t` (or soon after); at once if `t` has passed.
    fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()>;
}

/// The real clock: wall time from the system, sleeps on tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()> {
        let wait = (t - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait)
    }
}

/// The schedule as the journal and `lifeboat.toml` say it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub enabled: bool,
    /// A 5-field cron expression.
    pub cron: String,
}

/// What the loop schedules.
pub trait Job {
    /// Reads the schedule; called on every iteration.
    fn schedule(&mut self) -> anyhow::Result<Schedule>;
    /// One scheduled run (a backup, then prune). Reports its own outcome; the loop goes on either
    /// way.
    fn run(&mut self) -> impl Future<Output = ()>;
    /// Told when the loop plans a run, for the log: `None` when the expression never fires.
    fn planned(&mut self, _schedule: &Schedule, _at: Option<DateTime<Utc>>) {}
}

/// Runs `job` on its schedule, reading cron expressions in `tz`, until `shutdown` resolves.
/// Returns the number of runs.
pub async fn run_loop<C: Clock, J: Job, Tz: TimeZone>(
    clock: &C,
    job: &mut J,
    tz: &Tz,
    shutdown: impl Future<Output = ()>,
) -> u64 {
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    let mut stopping = false;
    let mut runs = 0;
    // The run the loop is waiting for: the expression it was computed from, and when it is due.
    let mut planned: Option<(String, DateTime<Utc>)> = None;
    let mut last_good: Option<Schedule> = None;
    while !stopping {
        let now = clock.now();
        let schedule = match job.schedule() {
            Ok(schedule) => {
                last_good = Some(schedule.clone());
                Some(schedule)
            }
            Err(err) => {
                tracing::warn!("cannot read the auto-backup schedule: {err:#}; retrying in {}s", POLL.num_seconds());
                last_good.clone()
            }
        };
        let cron = schedule.as_ref().and_then(|s| match crate::config::parse_cron(&s.cron) {
            Ok(cron) => Some(cron),
            Err(err) => {
                tracing::warn!(
                    "the auto-backup schedule is not valid: {err:#}; fix it with 'lifeboat auto-backup schedule'"
                );
                None
            }
        });
        let (Some(schedule), Some(cron)) = (schedule, cron) else {
            tokio::select! {
                biased;
                () = &mut shutdown => stopping = true,
                () = clock.sleep_until(now + POLL) => {}
            }
            continue;
        };
        let fresh = next_run(&cron, now, tz);
        let due = match (&planned, fresh) {
            // The same expression: keep the time already planned, so that once the clock passes it
            // the run is due; but if the clock went back, the fresh time may be earlier.
            (Some((expr, at)), Some(fresh)) if *expr == schedule.cron => (*at).min(fresh),
            (Some((expr, at)), None) if *expr == schedule.cron => *at,
            _ => {
                job.planned(&schedule, fresh);
                match fresh {
                    Some(at) => at,
                    None => {
                        planned = None;
                        tokio::select! {
                            biased;
                            () = &mut shutdown => stopping = true,
                            () = clock.sleep_until(now + POLL) => {}
                        }
                        continue;
                    }
                }
            }
        };
        planned = Some((schedule.cron.clone(), due));
        if now >= due {
            // Whatever happens, the next run is planned from the time after this one.
            planned = None;
            if schedule.enabled {
                let run = std::pin::pin!(job.run());
                let mut run = run;
                loop {
                    tokio::select! {
                        biased;
                        () = &mut run => break,
                        () = &mut shutdown, if !stopping => {
                            stopping = true;
                            tracing::warn!("shutdown requested: settling the backup in progress first");
                        }
                    }
                }
                runs += 1;
            } else {
                tracing::info!(
                    "auto-backup is disabled: no run at {}",
                    due.with_timezone(tz).naive_local().format("%Y-%m-%d %H:%M")
                );
            }
            continue;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => stopping = true,
            () = clock.sleep_until(due.min(now + POLL)) => {}
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn cron(expr: &str) -> Cron {
        crate::config::parse_cron(expr).unwrap()
    }

    /// Europe/Berlin in 2025: CET (+01:00), CEST (+02:00) from 2025-03-30 01:00 UTC (02:00 local
    /// jumps to 03:00) until 2025-10-26 01:00 UTC (03:00 local falls back to 02:00). A stand-in for
    /// a tz database, so the DST tests need no dependency and no `TZ` in the environment.
    #[derive(Clone, Copy, Debug)]
    struct Berlin2025;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(h, min, 0).unwrap()
    }

    impl Berlin2025 {
        fn offset_at_utc(utc_time: &NaiveDateTime) -> FixedOffset {
            let summer = *utc_time >= utc(2025, 3, 30, 1, 0) && *utc_time < utc(2025, 10, 26, 1, 0);
            FixedOffset::east_opt(if summer { 7200 } else { 3600 }).unwrap()
        }
    }

    impl TimeZone for Berlin2025 {
        type Offset = FixedOffset;

        fn from_offset(_: &FixedOffset) -> Self {
            Berlin2025
        }

        fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<FixedOffset> {
            // Try both offsets; an offset fits if the instant it gives has that offset.
            let fits = |secs: i32| {
                let offset = FixedOffset::east_opt(secs).unwrap();
                let instant = *local - TimeDelta::seconds(secs.into());
                (Berlin2025::offset_at_utc(&instant) == offset).then_some(offset)
            };
            match (fits(7200), fits(3600)) {
                (Some(summer), Some(winter)) => MappedLocalTime::Ambiguous(summer, winter),
                (Some(one), None) | (None, Some(one)) => MappedLocalTime::Single(one),
                (None, None) => MappedLocalTime::None,
            }
        }

        fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
            Berlin2025::offset_at_utc(&utc.and_hms_opt(0, 0, 0).unwrap())
        }

        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            Berlin2025::offset_at_utc(utc)
        }
    }

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Berlin2025> {
        Berlin2025.with_ymd_and_hms(y, m, d, h, min, 0).earliest().unwrap()
    }

    fn show<Tz: TimeZone>(times: &[DateTime<Tz>]) -> Vec<String>
    where
        Tz::Offset: std::fmt::Display,
    {
        times.iter().map(|t| t.format("%Y-%m-%d %H:%M %:z").to_string()).collect()
    }

    #[test]
    fn next_runs_in_a_fixed_offset_zone() {
        let tz = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        let after = tz.with_ymd_and_hms(2026, 2, 27, 2, 0, 0).unwrap();
        assert_eq!(
            show(&next_runs(&cron("0 2 * * *"), &after, 3)),
            ["2026-02-28 02:00 +05:30", "2026-03-01 02:00 +05:30", "2026-03-02 02:00 +05:30"]
        );
        // Strictly after, even within the same second.
        let mid_second = after + TimeDelta::milliseconds(400) - TimeDelta::days(1);
        assert_eq!(show(&next_runs(&cron("0 2 * * *"), &mid_second, 1)), ["2026-02-27 02:00 +05:30"]);
        let just_after = tz.with_ymd_and_hms(2026, 2, 27, 2, 0, 0).unwrap() + TimeDelta::milliseconds(400);
        assert_eq!(
            show(&next_runs(&cron("*/30 * * * *"), &just_after, 2)),
            ["2026-02-27 02:30 +05:30", "2026-02-27 03:00 +05:30"]
        );
    }

    #[test]
    fn a_0230_schedule_runs_at_0300_on_the_spring_forward_day() {
        let runs = next_runs(&cron("30 2 * * *"), &berlin(2025, 3, 28, 12, 0), 4);
        assert_eq!(
            show(&runs),
            [
                "2025-03-29 02:30 +01:00",
                "2025-03-30 03:00 +02:00",
                "2025-03-31 02:30 +02:00",
                "2025-04-01 02:30 +02:00"
            ]
        );
    }

    #[test]
    fn a_0230_schedule_runs_once_on_the_fall_back_day() {
        let runs = next_runs(&cron("30 2 * * *"), &berlin(2025, 10, 25, 12, 0), 3);
        assert_eq!(show(&runs), ["2025-10-26 02:30 +02:00", "2025-10-27 02:30 +01:00", "2025-10-28 02:30 +01:00"]);
    }

    #[test]
    fn an_interval_schedule_skips_the_missing_hour_and_repeats_the_doubled_one() {
        let spring = next_runs(&cron("*/30 * * * *"), &berlin(2025, 3, 30, 1, 0), 3);
        assert_eq!(show(&spring), ["2025-03-30 01:30 +01:00", "2025-03-30 03:00 +02:00", "2025-03-30 03:30 +02:00"]);
        let fall = next_runs(&cron("*/30 * * * *"), &berlin(2025, 10, 26, 2, 0), 4);
        assert_eq!(
            show(&fall),
            [
                "2025-10-26 02:30 +02:00",
                "2025-10-26 02:00 +01:00",
                "2025-10-26 02:30 +01:00",
                "2025-10-26 03:00 +01:00"
            ]
        );
    }

    // ---- the loop, on fake time ----

    /// A clock that jumps to whatever time it is asked to sleep until. Past `horizon` it stops
    /// the loop; a `suspend` makes the first sleep past its start end `length` late, as a host
    /// that slept through its schedule would.
    struct FakeClock {
        now: RefCell<DateTime<Utc>>,
        horizon: DateTime<Utc>,
        suspend: RefCell<Option<(DateTime<Utc>, TimeDelta)>>,
        stop: tokio::sync::watch::Sender<bool>,
        sleeps: RefCell<u32>,
    }

    impl FakeClock {
        fn new(start: DateTime<Utc>, horizon: DateTime<Utc>) -> Rc<FakeClock> {
            Rc::new(FakeClock {
                now: RefCell::new(start),
                horizon,
                suspend: RefCell::new(None),
                stop: tokio::sync::watch::channel(false).0,
                sleeps: RefCell::new(0),
            })
        }

        fn advance(&self, by: TimeDelta) {
            *self.now.borrow_mut() += by;
        }

        fn shutdown(&self) -> impl Future<Output = ()> + use<> {
            let mut rx = self.stop.subscribe();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    }

    impl Clock for Rc<FakeClock> {
        fn now(&self) -> DateTime<Utc> {
            *self.now.borrow()
        }

        fn sleep_until(&self, t: DateTime<Utc>) -> impl Future<Output = ()> {
            *self.sleeps.borrow_mut() += 1;
            assert!(*self.sleeps.borrow() < 100_000, "the loop spins");
            let mut wake = t.max(self.now());
            let suspend = *self.suspend.borrow();
            if let Some((from, length)) = suspend
                && wake >= from
            {
                wake += length;
                *self.suspend.borrow_mut() = None;
            }
            let past_horizon = wake > self.horizon;
            *self.now.borrow_mut() = if past_horizon { self.horizon } else { wake };
            let stop = self.stop.clone();
            async move {
                if past_horizon {
                    let _ = stop.send(true);
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// A job whose schedule a script changes at given times, and which records its runs.
    struct FakeJob {
        clock: Rc<FakeClock>,
        schedule: Schedule,
        changes: Vec<(DateTime<Utc>, Schedule)>,
        run_length: TimeDelta,
        runs: Vec<DateTime<Utc>>,
    }

    impl FakeJob {
        fn new(clock: &Rc<FakeClock>, cron: &str) -> FakeJob {
            FakeJob {
                clock: clock.clone(),
                schedule: Schedule { enabled: true, cron: cron.into() },
                changes: Vec::new(),
                run_length: TimeDelta::minutes(3),
                runs: Vec::new(),
            }
        }
    }

    impl Job for FakeJob {
        fn schedule(&mut self) -> anyhow::Result<Schedule> {
            let now = self.clock.now();
            while let Some((at, _)) = self.changes.first()
                && *at <= now
            {
                self.schedule = self.changes.remove(0).1;
            }
            Ok(self.schedule.clone())
        }

        fn run(&mut self) -> impl Future<Output = ()> {
            self.runs.push(self.clock.now());
            self.clock.advance(self.run_length);
            std::future::ready(())
        }
    }

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    fn drive(clock: &Rc<FakeClock>, job: &mut FakeJob) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run_loop(clock, job, &Utc, clock.shutdown()))
    }

    #[test]
    fn runs_once_per_scheduled_time() {
        let clock = FakeClock::new(at(1, 12, 0), at(4, 12, 0));
        let mut job = FakeJob::new(&clock, "0 2 * * *");
        assert_eq!(drive(&clock, &mut job), 3);
        assert_eq!(job.runs, [at(2, 2, 0), at(3, 2, 0), at(4, 2, 0)]);
    }

    #[test]
    fn missed_runs_after_a_suspend_give_one_run_not_a_burst() {
        let clock = FakeClock::new(at(1, 12, 0), at(6, 12, 0));
        // Suspended from 01:00 on the 2nd for three days and ten hours: the runs of the 2nd, 3rd,
        // 4th and 5th are missed, and one run happens at the resume (11:00 on the 5th).
        *clock.suspend.borrow_mut() = Some((at(2, 1, 0), TimeDelta::hours(3 * 24 + 10)));
        let mut job = FakeJob::new(&clock, "0 2 * * *");
        drive(&clock, &mut job);
        assert_eq!(job.runs, [at(5, 11, 0), at(6, 2, 0)]);
    }

    #[test]
    fn a_run_longer_than_the_period_does_not_start_a_burst() {
        let clock = FakeClock::new(at(1, 12, 0), at(1, 12, 30));
        let mut job = FakeJob::new(&clock, "*/5 * * * *");
        job.run_length = TimeDelta::minutes(12);
        drive(&clock, &mut job);
        // 12:05 runs until 12:17; the next run is the first time after that, 12:20.
        assert_eq!(job.runs, [at(1, 12, 5), at(1, 12, 20)]);
    }

    #[test]
    fn disabled_means_no_run_and_enabling_takes_effect_without_a_restart() {
        let clock = FakeClock::new(at(1, 12, 0), at(5, 12, 0));
        let mut job = FakeJob::new(&clock, "0 2 * * *");
        job.schedule.enabled = false;
        job.changes.push((at(3, 9, 0), Schedule { enabled: true, cron: "0 2 * * *".into() }));
        drive(&clock, &mut job);
        assert_eq!(job.runs, [at(4, 2, 0), at(5, 2, 0)]);
    }

    #[test]
    fn a_schedule_change_is_picked_up_within_the_poll_interval() {
        let clock = FakeClock::new(at(1, 12, 0), at(2, 12, 0));
        let mut job = FakeJob::new(&clock, "0 2 * * *");
        // At 12:10 the schedule becomes every six hours: the loop, asleep until 02:00 tomorrow,
        // notices within a minute and runs at 18:00 and 00:00 instead of waiting for 02:00.
        job.changes.push((at(1, 12, 10), Schedule { enabled: true, cron: "0 */6 * * *".into() }));
        drive(&clock, &mut job);
        assert_eq!(job.runs, [at(1, 18, 0), at(2, 0, 0), at(2, 6, 0), at(2, 12, 0)]);
    }

    #[test]
    fn a_clock_set_back_does_not_postpone_the_next_run() {
        let clock = FakeClock::new(at(3, 1, 0), at(3, 12, 0));
        let mut job = FakeJob::new(&clock, "0 2 * * *");
        // Set back a day after the first poll; the next run is then 02:00 of the 2nd, not of the 3rd.
        *clock.suspend.borrow_mut() = Some((at(3, 1, 1), -TimeDelta::days(1) - TimeDelta::minutes(1)));
        drive(&clock, &mut job);
        assert_eq!(job.runs[0], at(2, 2, 0));
    }

    #[test]
    fn shutdown_lets_the_run_in_progress_finish_and_starts_no_other() {
        /// Signals shutdown as soon as its run starts, then takes a while to finish.
        struct SlowJob {
            signal: Option<tokio::sync::oneshot::Sender<()>>,
            started: u32,
            finished: Rc<RefCell<bool>>,
        }
        impl Job for SlowJob {
            fn schedule(&mut self) -> anyhow::Result<Schedule> {
                Ok(Schedule { enabled: true, cron: "* * * * *".into() })
            }
            fn run(&mut self) -> impl Future<Output = ()> {
                self.started += 1;
                let signal = self.signal.take();
                let finished = self.finished.clone();
                async move {
                    if let Some(signal) = signal {
                        let _ = signal.send(());
                    }
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    *finished.borrow_mut() = true;
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let finished = Rc::new(RefCell::new(false));

        // A signal before the first run: no run at all.
        let clock = FakeClock::new(at(1, 12, 0), at(9, 0, 0));
        let mut job = SlowJob { signal: None, started: 0, finished: finished.clone() };
        assert_eq!(runtime.block_on(run_loop(&clock, &mut job, &Utc, async {})), 0);

        // A signal during a run: the run finishes, and no other starts.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut job = SlowJob { signal: Some(tx), started: 0, finished: finished.clone() };
        let shutdown = async move {
            let _ = rx.await;
        };
        assert_eq!(runtime.block_on(run_loop(&clock, &mut job, &Utc, shutdown)), 1);
        assert_eq!(job.started, 1);
        assert!(*finished.borrow(), "the run was cancelled");
    }
}
