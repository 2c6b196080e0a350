//! The spool (`[spool]`) through real sockets: the relay in-process, the SES simulator as its
//! upstream (STARTTLS, AUTH, fault scripts), the queue commands on the spool folder.
//!
//! Schedules are made small in the configuration (retry 50 ms, probe 100 ms) rather than
//! faked: the worker schedules in wall-clock milliseconds because its state survives restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::sim::{KEY_ID, PASS_US_EAST_1};
use crate::support::{Keys, SmtpClient, logs};
use dkim_relay::cli::queue::{Action, run_text};
use dkim_relay::sim::config::{ScriptStep, SimSettings, parse_reply_text};
use dkim_relay::sim::{RunningSim, outbox};
use dkim_relay::smtp::reply::Reply;
use dkim_relay::spool::store::{self, Area, Meta, State, Store};
use dkim_relay::{config, daemon};

pub const THROTTLE: &str = "454 Throttling failure: Maximum sending rate exceeded.";
pub const PAUSED: &str = "554 Message rejected: Sending paused for this account. For more information, please check the inbox of the email address associated with your AWS account.";
pub const NOT_VERIFIED: &str = "554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: x@example.net";

/// A simulator and a relay in front of it, with a spool.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub sim: RunningSim,
    pub relay: Option<daemon::Running>,
    pub config_path: PathBuf,
}

/// Fault script steps from SES reply texts (`"ok"` for a normal answer).
pub fn script(steps: &[&str]) -> Vec<ScriptStep> {
    steps
        .iter()
        .map(|s| match *s {
            "ok" => ScriptStep::Normal,
            r => ScriptStep::Reply(parse_reply_text(r).unwrap()),
        })
        .collect()
}

pub async fn start_sim(dir: &Path, configure: impl FnOnce(&mut SimSettings)) -> RunningSim {
    let mut s = crate::support::sim::settings(dir);
    s.max_send_rate = 10_000.0;
    configure(&mut s);
    crate::support::sim::start(s).await
}

/// The relay's configuration: upstream = the simulator, `[spool]` with `spool` keys.
pub fn relay_config(dir: &Path, sim: &RunningSim, password: &str, spool: &str) -> String {
    let keys = Keys::shared();
    let key = dir.join("s1.pem");
    if !key.exists() {
        dkim_relay::dkim::keygen::write_private_key(&key, &keys.org_rsa.pkcs8_pem).unwrap();
    }
    let ca = dir.join("sim-ca.pem");
    std::fs::write(&ca, &sim.ca_pem).unwrap();
    // Small schedules unless the test sets its own.
    let mut spool = spool.to_string();
    for (key, value) in [
        ("retry_initial_ms", "50"),
        ("retry_max_ms", "200"),
        ("pause_probe_ms", "100"),
    ] {
        if !spool.contains(key) {
            spool.push_str(&format!("\n{key} = {value}"));
        }
    }
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhostname = \"relay.test\"\nshutdown_grace_secs = 5\n\
         [upstream]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\nca_file = \"{ca}\"\n\
         username = \"{KEY_ID}\"\npassword = \"{password}\"\npool_size = 2\n\
         [spool]\ndir = \"{spool_dir}\"\n{spool}\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{key}\"\n",
        port = sim.starttls_addr.port(),
        ca = ca.display(),
        spool_dir = dir.join("spool").display(),
        key = key.display(),
    )
}

impl Rig {
    pub async fn start(
        spool: &str,
        password: &str,
        configure: impl FnOnce(&mut SimSettings),
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let sim = start_sim(dir.path(), configure).await;
        let config_path = dir.path().join("config.toml");
        std::fs::write(
            &config_path,
            relay_config(dir.path(), &sim, password, spool),
        )
        .unwrap();
        let mut rig = Rig {
            dir,
            sim,
            relay: None,
            config_path,
        };
        rig.start_relay().await;
        rig
    }

    pub async fn start_relay(&mut self) {
        let snapshot = match config::load(&self.config_path) {
            Ok(s) => s,
            Err(d) => panic!("{d:?}"),
        };
        self.relay = Some(daemon::start(&self.config_path, snapshot).await.unwrap());
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn store(&self) -> Store {
        Store::open(&self.spool()).unwrap()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.relay.as_ref().unwrap().addrs.smtp[0]
    }

    pub async fn send(&self, subject: &str) -> Reply {
        let mut c = SmtpClient::connect(self.addr()).await;
        let r = c
            .transaction(
                "app@example.org",
                &["someone@example.net"],
                &message(subject),
            )
            .await;
        c.quit().await;
        r
    }

    /// Subjects of what the simulator accepted.
    pub fn delivered(&self) -> Vec<String> {
        outbox::list(&self.sim.outbox)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.subject)
            .collect()
    }

    /// Waits (bounded) until `n` messages were delivered.
    pub async fn wait_delivered(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "only {:?} delivered; queue:\n{}",
            self.delivered(),
            run_text(&self.spool(), Action::List).unwrap()
        );
    }

    /// Waits (bounded) until `f` holds.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Rig) -> bool) {
        for _ in 0..500 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}; queue:\n{}",
            run_text(&self.spool(), Action::List).unwrap()
        );
    }

    pub fn count(&self, area: Area) -> usize {
        self.store().list(area).unwrap().len()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.relay.take() {
            r.shutdown().await;
        }
        self.sim.shutdown().await;
    }
}

pub fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@example.org>\r\nTo: someone@example.net\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@app.example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nhello {subject}\r\n"
    )
    .into_bytes()
}

fn queued_id(r: &Reply) -> String {
    assert_eq!(r.code, 250, "{r}");
    let line = r.lines.join(" ");
    line.split("queued as ")
        .nth(1)
        .unwrap_or_else(|| panic!("not a queued reply: {r}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_defer_queues_a_throttled_message_and_delivers_it_later() {
    let logs = logs();
    let rig = Rig::start("mode = \"on-defer\"", PASS_US_EAST_1, |s| {
        s.faults.script = script(&[THROTTLE]);
    })
    .await;
    let r = rig.send("throttled").await;
    let id = queued_id(&r);
    let d = rig.wait_delivered(1).await;
    assert_eq!(d, vec!["throttled".to_string()]);
    rig.wait_for("the queue to empty", |r| r.count(Area::Queue) == 0)
        .await;
    // The delivery is logged with the queue id and SES's message id.
    let line = logs
        .text()
        .lines()
        .find(|l| l.contains("spooled message delivered") && l.contains(&id))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("ses_id="), "{line}");
    // SES's 250 reaches the client verbatim when it answers at once.
    let r = rig.send("direct").await;
    assert!(r.lines[0].starts_with("Ok "), "{r}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_defer_passes_a_message_level_refusal_verbatim() {
    let rig = Rig::start("mode = \"on-defer\"", PASS_US_EAST_1, |s| {
        s.faults.script = script(&[NOT_VERIFIED]);
    })
    .await;
    let r = rig.send("refused").await;
    assert_eq!(r.code, 554, "{r}");
    assert!(r.lines[0].contains("Email address is not verified"), "{r}");
    assert_eq!(rig.count(Area::Queue), 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_mode_commits_first_and_delivers_signed_bytes() {
    let rig = Rig::start("mode = \"always\"", PASS_US_EAST_1, |_| {}).await;
    let r = rig.send("always").await;
    queued_id(&r);
    rig.wait_delivered(1).await;
    let rec = outbox::list(&rig.sim.outbox).unwrap().remove(0);
    let (_, eml) = outbox::show(&rig.sim.outbox, &rec.id).unwrap();
    // Ours and the one SES adds (d=amazonses.com) both verify.
    let mut dns = Keys::shared().dns();
    dns.push(rig.sim.ses_dkim_record.clone());
    crate::support::assert_dkimpy_pass(&eml, &dns);
    rig.wait_for("the queue to empty", |r| {
        r.count(Area::Queue) + r.count(Area::Active) == 0
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_refused_for_good_is_dead_lettered_and_can_be_retried() {
    let rig = Rig::start("mode = \"always\"", PASS_US_EAST_1, |s| {
        s.faults.script = script(&[NOT_VERIFIED]);
    })
    .await;
    let id = queued_id(&rig.send("dead").await);
    rig.wait_for("dead/", |r| r.count(Area::Dead) == 1).await;
    let dead = run_text(&rig.spool(), Action::Dead).unwrap();
    assert!(
        dead.contains(&id) && dead.contains("not verified"),
        "{dead}"
    );
    assert!(rig.delivered().is_empty());
    // The operator fixed the identity: retry moves it back and it goes.
    let out = run_text(&rig.spool(), Action::Retry(Some(id.clone()))).unwrap();
    assert!(out.contains("moved from dead/"), "{out}");
    rig.wait_delivered(1).await;
    assert_eq!(rig.count(Area::Dead), 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_maximum_age_a_message_is_dead_lettered_with_the_last_reply() {
    let steps: Vec<&str> = std::iter::repeat_n("451 Temporary service failure", 200).collect();
    let rig = Rig::start("mode = \"always\"\nmax_age_secs = 1", PASS_US_EAST_1, |s| {
        s.faults.script = script(&steps);
    })
    .await;
    let id = queued_id(&rig.send("old").await);
    rig.wait_for("dead/", |r| r.count(Area::Dead) == 1).await;
    let reason = rig.store().reason(Area::Dead, &id).unwrap();
    assert!(reason.why.contains("maximum age"), "{reason:?}");
    assert_eq!(
        reason.last_reply.as_deref(),
        Some("451 Temporary service failure")
    );
    assert!(rig.delivered().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_account_pauses_the_queue_and_it_resumes_without_bouncing() {
    pause_and_resume(PAUSED, "account-paused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_pauses_the_queue_and_it_resumes_without_bouncing() {
    pause_and_resume(
        "454 Throttling failure: Daily message quota exceeded.",
        "daily-quota",
    )
    .await;
}

/// SES answers `reply` (account-level) twice, then takes mail again.
async fn pause_and_resume(reply: &str, class: &str) {
    let rig = Rig::start(
        "mode = \"always\"\npause_probe_ms = 300",
        PASS_US_EAST_1,
        |s| {
            s.faults.script = script(&[reply, reply]);
        },
    )
    .await;
    for i in 0..3 {
        queued_id(&rig.send(&format!("p{i}")).await);
    }
    rig.wait_for("the pause", |r| {
        let list = run_text(&r.spool(), Action::List).unwrap();
        list.contains("QUEUE PAUSED") && list.contains(&format!("({class})"))
    })
    .await;
    let d = rig.wait_delivered(3).await;
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(rig.count(Area::Dead), 0);
    rig.wait_for("the pause to lift", |r| r.store().pause().is_none())
        .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_pause_the_queue_until_fixed() {
    let mut rig = Rig::start("mode = \"on-defer\"", "BWRONGWRONGWRONG", |_| {}).await;
    // 535 is account-level: the message is queued, not refused.
    let id = queued_id(&rig.send("creds").await);
    rig.wait_for("the pause", |r| {
        r.store()
            .pause()
            .is_some_and(|p| p.class == "credentials-refused")
    })
    .await;
    assert_eq!(rig.count(Area::Dead), 0);
    assert_eq!(rig.store().list(Area::Queue).unwrap(), vec![id]);
    // While paused, a new message goes straight to the spool: SES is not asked again.
    let second = queued_id(&rig.send("creds2").await);
    let line = logs()
        .text()
        .lines()
        .find(|l| l.contains("message spooled") && l.contains(&second))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains("upstream=not tried"), "{line}");
    // The operator fixes the password; a reload applies it, the next probe delivers.
    let fixed = relay_config(
        rig.dir.path(),
        &rig.sim,
        PASS_US_EAST_1,
        "mode = \"on-defer\"",
    );
    std::fs::write(&rig.config_path, fixed).unwrap();
    rig.relay.as_ref().unwrap().reload().await.unwrap();
    rig.wait_delivered(2).await;
    rig.wait_for("the pause to lift", |r| r.store().pause().is_none())
        .await;
    rig.relay.take().unwrap().shutdown().await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_file_is_detected_and_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), |_| {}).await;
    let store = Store::open(&dir.path().join("spool")).unwrap();
    let mut torn = Vec::new();
    // Committed files, then cut at random offsets (a crash mid-write, a bad disk).
    for i in 0..8 {
        let data = message(&format!("torn{i}"));
        let meta = Meta {
            id: store::new_id(),
            created_ms: store::now_ms(),
            mail_from: "app@example.org".into(),
            rcpts: vec!["someone@example.net".into()],
            size: data.len(),
        };
        store.commit(&meta, &data, &State::default(), 0).unwrap();
        let path = dir
            .path()
            .join("spool/queue")
            .join(format!("{}.msg", meta.id));
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = rand::random_range(0..len);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        torn.push(meta.id);
    }
    // One intact message goes through.
    let data = message("intact");
    let meta = Meta {
        id: store::new_id(),
        created_ms: store::now_ms(),
        mail_from: "app@example.org".into(),
        rcpts: vec!["someone@example.net".into()],
        size: data.len(),
    };
    store.commit(&meta, &data, &State::default(), 0).unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        relay_config(dir.path(), &sim, PASS_US_EAST_1, "mode = \"always\""),
    )
    .unwrap();
    let mut rig = Rig {
        dir,
        sim,
        relay: None,
        config_path,
    };
    rig.start_relay().await;
    rig.wait_delivered(1).await;
    rig.wait_for("every torn file in corrupt/", |r| {
        r.count(Area::Corrupt) == torn.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rig.delivered(), vec!["intact".to_string()]);
    let dead = run_text(&rig.spool(), Action::Dead).unwrap();
    assert!(dead.contains("torn or corrupt"), "{dead}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_floor_the_client_gets_452_and_recovers() {
    let rig = Rig::start(
        "mode = \"always\"\nmin_free_mb = 1099511627776",
        PASS_US_EAST_1,
        |_| {},
    )
    .await;
    let r = rig.send("full").await;
    assert_eq!(r.code, 452, "{r}");
    assert!(r.lines[0].starts_with("4.3.1"), "{r}");
    assert_eq!(rig.count(Area::Queue), 0);
    // Space returns (here: the floor is lowered); a reload applies it.
    let text = relay_config(
        rig.dir.path(),
        &rig.sim,
        PASS_US_EAST_1,
        "mode = \"always\"",
    );
    std::fs::write(&rig.config_path, text).unwrap();
    rig.relay.as_ref().unwrap().reload().await.unwrap();
    queued_id(&rig.send("room").await);
    rig.wait_delivered(1).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_list_show_retry_and_delete_while_the_relay_runs() {
    // Long retry delays: what is deferred stays queued until the operator acts.
    let rig = Rig::start(
        "mode = \"always\"\nretry_initial_ms = 600000\nretry_max_ms = 600000",
        PASS_US_EAST_1,
        |s| s.faults.script = script(&[THROTTLE, THROTTLE]),
    )
    .await;
    let keep = queued_id(&rig.send("keep").await);
    rig.wait_for("the first deferral", |r| {
        r.store().read_state(&keep).is_some_and(|s| s.attempts == 1)
    })
    .await;
    let drop = queued_id(&rig.send("drop").await);
    rig.wait_for("the second deferral", |r| {
        r.store().read_state(&drop).is_some_and(|s| s.attempts == 1)
    })
    .await;
    let list = run_text(&rig.spool(), Action::List).unwrap();
    assert!(
        list.contains(&keep) && list.contains(&drop) && list.contains("Throttling failure"),
        "{list}"
    );
    assert!(list.contains("2 queued"), "{list}");
    let show = run_text(&rig.spool(), Action::Show(keep.clone())).unwrap();
    assert!(
        show.contains("mail_from: app@mail.example.org")
            && show.contains("Subject: keep")
            && show.contains("DKIM-Signature"),
        "{show}"
    );
    let out = run_text(&rig.spool(), Action::Delete(drop.clone())).unwrap();
    assert!(out.contains("deleted"), "{out}");
    assert!(run_text(&rig.spool(), Action::Show(drop.clone())).is_err());
    assert!(run_text(&rig.spool(), Action::Delete("../etc".into())).is_err());
    run_text(&rig.spool(), Action::Retry(Some(keep.clone()))).unwrap();
    assert_eq!(rig.wait_delivered(1).await, vec!["keep".to_string()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.delivered(), vec!["keep".to_string()]);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_delivery_in_flight_finish_and_leaves_the_rest_spooled() {
    let mut rig = Rig::start("mode = \"always\"", PASS_US_EAST_1, |s| {
        s.faults.latency = Duration::from_millis(150);
    })
    .await;
    queued_id(&rig.send("first").await);
    rig.wait_for("the first delivery to start", |r| {
        r.count(Area::Active) == 1
    })
    .await;
    let second = queued_id(&rig.send("second").await);
    // The graceful stop (what SIGTERM runs): the attempt in flight finishes, nothing new starts.
    rig.relay.take().unwrap().shutdown().await;
    assert_eq!(rig.delivered(), vec!["first".to_string()]);
    assert_eq!(rig.count(Area::Active), 0);
    assert_eq!(rig.store().list(Area::Queue).unwrap(), vec![second]);
    // A restart delivers what was left.
    rig.start_relay().await;
    assert_eq!(rig.wait_delivered(2).await.len(), 2);
    rig.stop().await;
}

#[test]
fn the_queue_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = Store::open(&spool).unwrap();
    let data = message("cli");
    let meta = Meta {
        id: store::new_id(),
        created_ms: store::now_ms(),
        mail_from: "app@example.org".into(),
        rcpts: vec!["someone@example.net".into()],
        size: data.len(),
    };
    store.commit(&meta, &data, &State::default(), 0).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
            .arg("queue")
            .arg("--dir")
            .arg(&spool)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&meta.id) && text.contains("1 queued"),
        "{text}"
    );
    assert_eq!(run(&["retry"]).status.code(), Some(2));
    let out = run(&["retry", "--all"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 queued messages due now"));
    let out = run(&["delete", &meta.id]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["show", &meta.id]);
    assert!(!out.status.success());
    let out = run(&["dead"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead-lettered messages"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_spool_needs_a_restart() {
    let rig = Rig::start("mode = \"on-defer\"", PASS_US_EAST_1, |_| {}).await;
    let text = relay_config(
        rig.dir.path(),
        &rig.sim,
        PASS_US_EAST_1,
        "mode = \"always\"",
    )
    .replace("/spool\"", "/elsewhere\"");
    std::fs::write(&rig.config_path, text).unwrap();
    let refused = rig.relay.as_ref().unwrap().reload().await.unwrap_err();
    assert!(refused.iter().any(|d| d.key == "spool.dir"), "{refused:?}");
    // The running configuration (on-defer) stays: SES's own reply comes back.
    let r = rig.send("still on-defer").await;
    assert!(r.lines[0].starts_with("Ok "), "{r}");
    rig.stop().await;
}
