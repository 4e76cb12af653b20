//! A fault-injecting HTTP proxy for the S3 tests: it sits on a free loopback port in front of an S3 endpoint
//! (Garage), forwards every request, and applies the rules a test sets for chosen ones: answer 500/503 with an
//! S3 error body, drop the connection (before forwarding, or after K bytes of the response body), or delay.
//!
//! It understands just enough HTTP/1.1 for the AWS SDK: several requests per keep-alive connection, bodies
//! framed by Content-Length or `Transfer-Encoding: chunked` (relayed as is), and `Expect: 100-continue` (the
//! proxy answers the 100 itself and strips the header upstream). Each client connection gets its own upstream
//! connection. It runs on its own thread and tokio runtime, so an in-process store and a `dr` child process
//! can both use it; dropping the proxy stops it.
//!
//! It also meters what it relays: the bytes of request bodies (uploads) and of response bodies (downloads), and
//! when the first and the last of them went through ([`FaultProxy::uploaded`], [`FaultProxy::downloaded`]), for
//! the bandwidth limit's tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A barrier the test opens: requests held by [`Action::Hold`] wait for it.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    async fn passed(&self) {
        while !self.0.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a rule does to a request it fires on.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status and an S3 XML error (`InternalError`, `SlowDown` for 503, `AccessDenied` for 403)
    /// without forwarding; `close` closes the connection afterwards.
    Error { status: u16, close: bool },
    /// Close the client's connection without forwarding the request (its body is read first).
    Drop,
    /// Forward the request, relay `bytes` bytes of the response body, then close both connections
    /// (0: the server did the work, the client never hears of it).
    DropAfter { bytes: u64 },
    /// Wait, then forward as usual.
    Delay(Duration),
    /// Wait until the test opens the gate, then forward as usual.
    Hold(Gate),
}

/// Which requests a rule applies to, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    contains: Vec<String>,
    excludes: Vec<String>,
    skip: usize,
    times: Option<usize>,
    action: Action,
}

impl Rule {
    /// Requests with this method (`"*"` for any) whose path and query contain `contains` (`""` for any).
    pub fn new(method: &str, contains: &str, action: Action) -> Rule {
        Rule {
            method: (method != "*").then(|| method.to_string()),
            contains: if contains.is_empty() { Vec::new() } else { vec![contains.to_string()] },
            excludes: Vec::new(),
            skip: 0,
            times: Some(1),
            action,
        }
    }

    /// Also requires `text` in the path and query.
    pub fn and(mut self, text: &str) -> Rule {
        self.contains.push(text.to_string());
        self
    }

    /// Ignores requests whose path and query contain `text`.
    pub fn except(mut self, text: &str) -> Rule {
        self.excludes.push(text.to_string());
        self
    }

    /// Lets the first `n` matching requests through untouched.
    pub fn after(mut self, n: usize) -> Rule {
        self.skip = n;
        self
    }

    /// Fires `n` times (the default is once).
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    /// Fires on every matching request.
    pub fn always(mut self) -> Rule {
        self.times = None;
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.contains.iter().all(|c| target.contains(c.as_str()))
            && !self.excludes.iter().any(|c| target.contains(c.as_str()))
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The rule that fired on it (its index), if any.
    pub rule: Option<usize>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct RuleState {
    matched: usize,
    fired: usize,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(Rule, RuleState)>,
    seen: Vec<Seen>,
}

/// The body bytes relayed in one direction, and when the first and the last of them were handed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    pub bytes: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

impl Traffic {
    fn record(&mut self, bytes: usize) {
        let now = Instant::now();
        self.bytes += bytes as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// From the first byte to the last.
    pub fn duration(&self) -> Duration {
        match (self.first, self.last) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    /// Bytes per second from the first byte to the last.
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.duration().as_secs_f64()
    }
}

/// Where a connection's relayed bodies are counted.
type Meter = Arc<Mutex<Traffic>>;

impl State {
    /// Counts the request against every rule it matches; returns the first rule that fires.
    fn decide(&mut self, method: &str, target: &str) -> Option<(usize, Action)> {
        let mut chosen = None;
        for (index, (rule, state)) in self.rules.iter_mut().enumerate() {
            if !rule.matches(method, target) {
                continue;
            }
            state.matched += 1;
            let due = state.matched > rule.skip && rule.times.is_none_or(|n| state.fired < n);
            if due && chosen.is_none() {
                state.fired += 1;
                chosen = Some((index, rule.action.clone()));
            }
        }
        chosen
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    uploaded: Meter,
    downloaded: Meter,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultProxy({})", self.addr)
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .trim_end_matches('/')
            .parse()
            .expect("an IP:port endpoint");
        assert!(upstream.ip().is_loopback(), "the proxy forwards to loopback only");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (uploaded, downloaded) = (Meter::default(), Meter::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let meters = (uploaded.clone(), downloaded.clone());
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let accept = async {
                        loop {
                            let Ok((client, _)) = listener.accept().await else { continue };
                            let state = shared.clone();
                            let meters = meters.clone();
                            tokio::spawn(async move {
                                let _ = serve(client, upstream, state, meters).await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_background();
            })
            .unwrap();
        FaultProxy { addr, state, uploaded, downloaded, stop: Some(stop), thread: Some(thread) }
    }

    /// The endpoint to give a client: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule; returns its index for [`FaultProxy::fired`] and [`FaultProxy::matched`].
    pub fn add(&self, rule: Rule) -> usize {
        let mut state = self.state.lock().unwrap();
        state.rules.push((rule, RuleState::default()));
        state.rules.len() - 1
    }

    /// Removes every rule's effect (counts are kept): from now on everything passes.
    pub fn clear(&self) {
        for (rule, _) in self.state.lock().unwrap().rules.iter_mut() {
            rule.times = Some(0);
        }
    }

    /// How many requests matched rule `index` (fired or not).
    pub fn matched(&self, index: usize) -> usize {
        self.state.lock().unwrap().rules[index].1.matched
    }

    /// How many times rule `index` fired.
    pub fn fired(&self, index: usize) -> usize {
        self.state.lock().unwrap().rules[index].1.fired
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The request bodies relayed so far (what the client uploaded).
    pub fn uploaded(&self) -> Traffic {
        *self.uploaded.lock().unwrap()
    }

    /// The response bodies relayed so far (what the client downloaded).
    pub fn downloaded(&self) -> Traffic {
        *self.downloaded.lock().unwrap()
    }

    /// Starts both counts again from nothing.
    pub fn reset_traffic(&self) {
        *self.uploaded.lock().unwrap() = Traffic::default();
        *self.downloaded.lock().unwrap() = Traffic::default();
    }

    /// Requests seen with this method whose target contains `contains`.
    pub fn count(&self, method: &str, contains: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.target.contains(contains)).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A connection with the bytes read past what was consumed, and where the body bytes it relays are counted.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
    meter: Meter,
}

type IoResult<T> = std::io::Result<T>;

fn broken(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string())
}

impl Conn {
    fn new(stream: TcpStream, meter: Meter) -> Conn {
        Conn { stream, buffer: Vec::new(), meter }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    async fn fill(&mut self) -> IoResult<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// A message head (up to and including the blank line), or `None` at a clean end of stream.
    async fn read_head(&mut self) -> IoResult<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buffer.drain(..end + 4).collect()));
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() { Ok(None) } else { Err(broken("end of stream inside a head")) };
            }
        }
    }

    async fn read_line(&mut self) -> IoResult<Vec<u8>> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buffer.drain(..end + 2).collect());
            }
            if !self.fill().await? {
                return Err(broken("end of stream inside a chunked body"));
            }
        }
    }

    /// Moves `n` bytes to `to` (or discards them); stops early, returning false, once `budget` is spent.
    async fn relay_exact(
        &mut self,
        mut n: u64,
        to: Option<&mut TcpStream>,
        budget: &mut Option<u64>,
    ) -> IoResult<bool> {
        let mut to = to;
        while n > 0 {
            if self.buffer.is_empty() && !self.fill().await? {
                return Err(broken("end of stream inside a body"));
            }
            let mut take = (self.buffer.len() as u64).min(n);
            if let Some(left) = budget {
                take = take.min(*left);
            }
            let piece: Vec<u8> = self.buffer.drain(..take as usize).collect();
            if let Some(to) = to.as_deref_mut() {
                to.write_all(&piece).await?;
                self.meter.lock().unwrap().record(piece.len());
            }
            n -= take;
            if let Some(left) = budget {
                *left -= take;
                if *left == 0 && n > 0 {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Moves a whole body to `to` (or discards it); false if `budget` ran out first.
    async fn relay_body(
        &mut self,
        framing: Framing,
        to: Option<&mut TcpStream>,
        budget: &mut Option<u64>,
    ) -> IoResult<bool> {
        let mut to = to;
        match framing {
            Framing::Length(n) => self.relay_exact(n, to, budget).await,
            Framing::Chunked => loop {
                let line = self.read_line().await?;
                let size_text = String::from_utf8_lossy(&line);
                let size_text = size_text.trim().split(';').next().unwrap_or("").to_string();
                let size = u64::from_str_radix(&size_text, 16).map_err(|_| broken("bad chunk size"))?;
                if let Some(to) = to.as_deref_mut() {
                    to.write_all(&line).await?;
                }
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        let trailer = self.read_line().await?;
                        if let Some(to) = to.as_deref_mut() {
                            to.write_all(&trailer).await?;
                        }
                        if trailer == b"\r\n" {
                            return Ok(true);
                        }
                    }
                }
                if !self.relay_exact(size + 2, to.as_deref_mut(), budget).await? {
                    return Ok(false);
                }
            },
            Framing::UntilClose => loop {
                if !self.buffer.is_empty() {
                    let n = self.buffer.len() as u64;
                    if !self.relay_exact(n, to.as_deref_mut(), budget).await? {
                        return Ok(false);
                    }
                }
                if !self.fill().await? {
                    return Ok(true);
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    start_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> IoResult<Head> {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Head { start_line, headers })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn framing(&self, request: bool) -> Framing {
        if self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            Framing::Chunked
        } else if let Some(length) = self.header("content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(length)
        } else if request {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        }
    }

    fn wants_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The head as bytes, without the headers named in `drop`.
    fn to_bytes(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start_line);
        for (k, v) in &self.headers {
            if !drop.iter().any(|d| k.eq_ignore_ascii_case(d)) {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn error_response(status: u16, close: bool) -> Vec<u8> {
    let (reason, code, message) = match status {
        503 => ("Service Unavailable", "SlowDown", "Please reduce your request rate."),
        403 => ("Forbidden", "AccessDenied", "Access Denied (injected by the test proxy)"),
        500 => ("Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
        _ => ("Error", "InternalError", "Injected error."),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>fault-proxy</RequestId></Error>"
    );
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: {connection}\r\n\
         x-amz-request-id: fault-proxy\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one client connection until either side closes it or a rule drops it.
async fn serve(
    client: TcpStream,
    upstream_addr: SocketAddr,
    state: Arc<Mutex<State>>,
    (uploaded, downloaded): (Meter, Meter),
) -> IoResult<()> {
    client.set_nodelay(true)?;
    let mut client = Conn::new(client, uploaded);
    let mut upstream: Option<Conn> = None;
    loop {
        let Some(raw) = client.read_head().await? else { return Ok(()) };
        let head = Head::parse(&raw)?;
        let mut parts = head.start_line.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let decision = {
            let mut state = state.lock().unwrap();
            let decision = state.decide(&method, &target);
            state.seen.push(Seen {
                method: method.clone(),
                target: target.clone(),
                range: head.header("range").map(str::to_string),
                headers: head.headers.clone(),
                rule: decision.as_ref().map(|(i, _)| *i),
            });
            decision.map(|(_, action)| action)
        };
        let expects_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let request_framing = head.framing(true);

        match decision {
            Some(Action::Error { status, close }) => {
                if expects_continue {
                    // The body was not sent: answer at once, and close so it never arrives.
                    client.stream.write_all(&error_response(status, true)).await?;
                    return Ok(());
                }
                client.relay_body(request_framing, None, &mut None).await?;
                client.stream.write_all(&error_response(status, close)).await?;
                if close || head.wants_close() {
                    return Ok(());
                }
                continue;
            }
            Some(Action::Drop) => {
                if !expects_continue {
                    client.relay_body(request_framing, None, &mut None).await?;
                }
                return Ok(());
            }
            Some(Action::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Action::Hold(ref gate)) => gate.passed().await,
            Some(Action::DropAfter { .. }) | None => {}
        }

        if upstream.is_none() {
            let stream = TcpStream::connect(upstream_addr).await?;
            stream.set_nodelay(true)?;
            upstream = Some(Conn::new(stream, downloaded.clone()));
        }
        let server = upstream.as_mut().unwrap();
        if expects_continue {
            client.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        server.stream.write_all(&head.to_bytes(&["expect"])).await?;
        client.relay_body(request_framing, Some(&mut server.stream), &mut None).await?;

        // The response: skip any interim 1xx, then the final head and its body.
        let response_head = loop {
            let Some(raw) = server.read_head().await? else { return Err(broken("upstream closed")) };
            let parsed = Head::parse(&raw)?;
            let status: u16 = parsed.start_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            if (100..200).contains(&status) {
                continue;
            }
            break (parsed, raw, status);
        };
        let (response, raw, status) = response_head;
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else {
            response.framing(false)
        };
        let mut budget = match decision {
            Some(Action::DropAfter { bytes }) => Some(bytes),
            _ => None,
        };
        if budget == Some(0) {
            return Ok(()); // the server did the work; the client never hears of it
        }
        client.stream.write_all(&raw).await?;
        let whole = server.relay_body(framing, Some(&mut client.stream), &mut budget).await?;
        if !whole || budget == Some(0) {
            return Ok(()); // dropped mid-response: both connections close here
        }
        if response.wants_close() || head.wants_close() || framing == Framing::UntilClose {
            return Ok(());
        }
    }
}

/// The requests seen, one a line (method, target, Range, the rule that fired), for assertion messages.
pub fn describe(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| {
            let range = s.range.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default();
            let rule = s.rule.map(|r| format!(" <- rule {r}")).unwrap_or_default();
            format!("{} {}{range}{rule}", s.method, s.target)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
