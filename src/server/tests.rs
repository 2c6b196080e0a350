//! Shell tests with a minimal protocol: what holds for every protocol, whatever its wording.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Answers every command `250 ok`; words the shell's notices as `421 <notice>`.
struct Echo(Arc<Settings>);

struct EchoConn;

impl Protocol for Echo {
    type Handler = EchoConn;
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.0)
    }
    fn accept(&self, _peer: Peer) -> (Arc<Settings>, EchoConn) {
        (Arc::clone(&self.0), EchoConn)
    }
}

impl Handler for EchoConn {
    fn greeting(&mut self) -> Action {
        Action::Reply(Reply::plain(220, "test"))
    }
    async fn command(&mut self, _line: Result<Vec<u8>, LineError>) -> Action {
        Action::Reply(Reply::plain(250, "ok"))
    }
    async fn data(&mut self, _data: Result<Vec<u8>, DataError>, _size: usize) -> Action {
        Action::Reply(Reply::plain(250, "data"))
    }
    fn tls_started(&mut self) {}
    fn in_transaction(&self) -> bool {
        false
    }
    fn notice(&mut self, notice: Notice) -> Option<Reply> {
        Some(Reply::plain(421, format!("{notice:?}")))
    }
}

async fn start(settings: Settings) -> (SocketAddr, Handle) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let handle = spawn(
        vec![Listener::new(tcp, Mode::Plain)],
        Arc::new(Echo(Arc::new(settings))),
    );
    (addr, handle)
}

async fn read_line(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await {
            Ok(Ok(1)) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A command dribbled a byte at a time: the relay's rule (complete within the timeout) cuts
/// it; the simulator's idle rule (any input restarts the timer) lets it through.
#[tokio::test]
async fn command_timeout_complete_or_idle() {
    for idle in [false, true] {
        let mut s = Settings::new("test");
        s.command_timeout = Duration::from_millis(400);
        s.command_timeout_is_idle = idle;
        let (addr, _h) = start(s).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_line(&mut c).await, "220 test\r\n");
        for b in [b"N", b"O", b"O", b"P"] {
            let _ = c.write_all(b).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let _ = c.write_all(b"\r\n").await;
        let expected = if idle {
            "250 ok\r\n"
        } else {
            "421 CommandTimeout\r\n"
        };
        assert_eq!(read_line(&mut c).await, expected, "idle = {idle}");
    }
}

/// Over the limit, the protocol's own refusal; a freed slot is reused; the drain tells an
/// idle client and closes the listener.
#[tokio::test]
async fn limit_refusal_and_drain_use_the_protocols_words() {
    let mut s = Settings::new("test");
    s.max_connections = 1;
    let (addr, mut h) = start(s).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut first).await, "220 test\r\n");
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut second).await, "421 TooManyConnections\r\n");
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        if read_line(&mut c).await == "220 test\r\n" {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = third.expect("the freed slot is available again");
    let stopped = h.shutdown();
    let (stopped, line) = tokio::join!(stopped, read_line(&mut third));
    assert_eq!(line, "421 ShuttingDown\r\n");
    assert_eq!(stopped.aborted, 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Answers DATA with 354 and each message with its size, or 452 when over the budget; records
/// the bytes in flight it saw while answering.
struct Budgeted {
    settings: Arc<Settings>,
    budget: ByteBudget,
    seen: Arc<std::sync::Mutex<Vec<usize>>>,
}

struct BudgetedConn {
    budget: ByteBudget,
    seen: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Protocol for Budgeted {
    type Handler = BudgetedConn;
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings)
    }
    fn accept(&self, _peer: Peer) -> (Arc<Settings>, BudgetedConn) {
        let conn = BudgetedConn {
            budget: self.budget.clone(),
            seen: Arc::clone(&self.seen),
        };
        (Arc::clone(&self.settings), conn)
    }
}

impl Handler for BudgetedConn {
    fn greeting(&mut self) -> Action {
        Action::Reply(Reply::plain(220, "test"))
    }
    async fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        match line {
            Ok(l) if l == b"DATA" => Action::StartData(Reply::plain(354, "go")),
            _ => Action::Reply(Reply::plain(250, "ok")),
        }
    }
    fn budget(&self) -> Option<&ByteBudget> {
        Some(&self.budget)
    }
    async fn data(&mut self, data: Result<Vec<u8>, DataError>, _size: usize) -> Action {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(self.budget.in_flight());
        }
        match data {
            Ok(d) => Action::Reply(Reply::plain(250, format!("got {}", d.len()))),
            Err(DataError::OverBudget) => Action::Reply(Reply::plain(452, "over budget")),
            Err(e) => Action::Reply(Reply::plain(554, format!("{e:?}"))),
        }
    }
    fn tls_started(&mut self) {}
    fn in_transaction(&self) -> bool {
        false
    }
    fn notice(&mut self, notice: Notice) -> Option<Reply> {
        Some(Reply::plain(421, format!("{notice:?}")))
    }
}

fn message_of(lines: usize) -> Vec<u8> {
    let mut m = b"Subject: x\r\n\r\n".to_vec();
    for _ in 0..lines {
        m.extend_from_slice(&[b'a'; 98]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// A DATA larger than the bytes-in-flight budget is read to its end, not stored, and handed to
/// the protocol as `OverBudget`; the session stays in step, the next small message is stored,
/// its bytes count while the protocol answers, and everything is given back afterwards.
#[tokio::test]
async fn data_over_the_budget_is_refused_and_the_budget_is_given_back() {
    let budget = ByteBudget::new(4096);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let protocol = Budgeted {
        settings: Arc::new(Settings::new("test")),
        budget: budget.clone(),
        seen: Arc::clone(&seen),
    };
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let _h = spawn(vec![Listener::new(tcp, Mode::Plain)], Arc::new(protocol));
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut c).await, "220 test\r\n");
    c.write_all(b"DATA\r\n").await.unwrap();
    assert_eq!(read_line(&mut c).await, "354 go\r\n");
    c.write_all(&message_of(100)).await.unwrap(); // 10 KB > 4 KB
    assert_eq!(read_line(&mut c).await, "452 over budget\r\n");
    c.write_all(b"DATA\r\n").await.unwrap();
    assert_eq!(read_line(&mut c).await, "354 go\r\n");
    c.write_all(&message_of(10)).await.unwrap(); // 1 KB
    assert_eq!(read_line(&mut c).await, "250 got 1014\r\n");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], 0, "a refused message holds nothing");
    assert!(
        seen[1] >= 1014,
        "a stored message counts while answered: {seen:?}"
    );
    assert_eq!(budget.in_flight(), 0);
}
