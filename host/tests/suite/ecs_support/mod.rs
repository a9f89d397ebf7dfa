//! A tiny HTTP/1.1 server on loopback that answers like the ECS JSON API with canned bodies,
//! and records every request (target, headers, body) so tests can check what was sent.
//!
//! Std only: one thread per connection, keep-alive supported, `Content-Length` bodies only (what
//! the AWS SDK sends). It is a test double for single operations; the emulator crate is the
//! full fake ECS.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The operation from `X-Amz-Target: AmazonEC2ContainerServiceV20141113.ListTasks`.
    pub fn operation(&self) -> Option<&str> {
        self.header("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A canned response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    pub content_type: &'static str,
}

impl Response {
    pub fn json(value: serde_json::Value) -> Response {
        Response {
            status: 200,
            body: value.to_string(),
            content_type: "application/x-amz-json-1.1",
        }
    }

    /// An AWS JSON error: `{"__type": code, "message": message}` with the given status.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response {
            status,
            body: serde_json::json!({ "__type": code, "message": message }).to_string(),
            content_type: "application/x-amz-json-1.1",
        }
    }

    pub fn raw(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.to_owned(),
            content_type: "application/x-amz-json-1.1",
        }
    }
}

type Handler = dyn Fn(&Request, usize) -> Response + Send + Sync;

/// The running server. It lives until the test process ends.
pub struct FakeServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeServer {
    /// Starts a server; `handler` gets each request and its index among requests with the same
    /// operation (0 for the first ListTasks, 1 for the second, …).
    pub fn start(
        handler: impl Fn(&Request, usize) -> Response + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let counter = Arc::clone(&counter);
                thread::spawn(move || serve(stream, &*handler, &recorded, &counter));
            }
        });
        FakeServer { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn operations(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.operation().map(str::to_owned))
            .collect()
    }
}

fn serve(
    stream: TcpStream,
    handler: &Handler,
    recorded: &Mutex<Vec<Request>>,
    counter: &AtomicUsize,
) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let index = {
            let Ok(mut all) = recorded.lock() else { return };
            let same = all
                .iter()
                .filter(|r| r.operation() == request.operation() && r.path == request.path)
                .count();
            all.push(request.clone());
            same
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let response = handler(&request, index);
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-amzn-RequestId: req-{}\r\n\r\n",
            response.status,
            response.content_type,
            response.body.len(),
            counter.load(Ordering::SeqCst)
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(response.body.as_bytes()).is_err()
        {
            return;
        }
        let _ = writer.flush();
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A task as DescribeTasks returns it, with one container per `(name, agent status)`.
pub fn task_json(
    id: &str,
    last_status: &str,
    containers: &[(&str, Option<&str>)],
) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .map(|(name, agent)| {
            let agents: Vec<serde_json::Value> = agent
                .iter()
                .map(|status| serde_json::json!({ "name": "ExecuteCommandAgent", "lastStatus": status }))
                .collect();
            serde_json::json!({
                "name": name,
                "runtimeId": format!("{id}-{name}-rt"),
                "lastStatus": last_status,
                "managedAgents": agents,
            })
        })
        .collect();
    serde_json::json!({
        "taskArn": task_arn(id),
        "lastStatus": last_status,
        "desiredStatus": "RUNNING",
        "enableExecuteCommand": true,
        "containers": containers,
    })
}

pub fn task_arn(id: &str) -> String {
    format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{id}")
}

/// The DescribeTasks answer for the tasks asked in `request`, looked up in `known`.
pub fn describe_answer(request: &Request, known: &[serde_json::Value]) -> Response {
    let asked: Vec<String> = request.json()["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    for arn in &asked {
        let found = known.iter().find(|task| {
            let known_arn = task["taskArn"].as_str().unwrap_or_default();
            known_arn == arn || known_arn.rsplit('/').next() == Some(arn.as_str())
        });
        match found {
            Some(task) => tasks.push(task.clone()),
            None => failures.push(serde_json::json!({ "arn": arn, "reason": "MISSING" })),
        }
    }
    Response::json(serde_json::json!({ "tasks": tasks, "failures": failures }))
}
