//! `warren-cli … | head -1`: when the reader of stdout goes away, the CLI exits quietly with
//! status 141 (what a shell reports for a process killed by SIGPIPE), never panics.
//!
//! Each test serves one canned `GET /v1/services/web` answer from a fake peer on 127.0.0.1
//! (a thread of the test) and runs the real binary against it with its stdout piped to the
//! test, which closes its end of the pipe early.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// The exit status the CLI documents for a closed stdout.
const STDOUT_CLOSED_EXIT: i32 = 141;

/// How long the fake peer waits for the CLI to connect before the test fails (a deadline
/// against a hang, not a timing assertion).
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// A service whose `service inspect` prints `env_vars` + some lines of JSON.
fn service_json(env_vars: usize) -> Vec<u8> {
    let env: Vec<String> = (0..env_vars)
        .map(|i| format!("VARIABLE_{i}=some value long enough to fill a pipe quickly"))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "name": "web",
        "generation": 1,
        "spec": {"image": "warren/busybox:latest", "env": env},
    }))
    .unwrap()
}

/// A fake peer on 127.0.0.1: accepts one connection, reads the request, waits for `go`,
/// then answers `200` with `body` and closes.
fn fake_peer(body: Vec<u8>, go: mpsc::Receiver<()>) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let deadline = Instant::now() + CONNECT_DEADLINE;
        let mut stream: TcpStream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the CLI never connected");
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        go.recv().unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    (port, server)
}

fn inspect_web(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_warren-cli"))
        .args(["--peer", &format!("http://127.0.0.1:{port}")])
        .args(["service", "inspect", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` and returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), stderr)
}

#[test]
fn output_to_a_reader_that_closed_before_it_exits_141_without_a_panic() {
    let (go_tx, go) = mpsc::channel();
    let (port, server) = fake_peer(service_json(100), go);
    let mut child = inspect_web(port);
    // Close the read end before the peer answers: the CLI's first write finds no reader.
    drop(child.stdout.take());
    go_tx.send(()).unwrap();
    let (code, stderr) = finish(child);
    server.join().unwrap();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr for a closed stdout");
    assert_eq!(code, Some(STDOUT_CLOSED_EXIT), "stderr: {stderr}");
}

#[test]
fn a_reader_that_takes_one_line_of_many_gets_it_and_the_cli_exits_141() {
    // Some 2.5 MB of output: far more than a pipe buffers, so most writes come after the
    // reader went away (as with `| head -1`).
    let (go_tx, go) = mpsc::channel();
    let (port, server) = fake_peer(service_json(40_000), go);
    let mut child = inspect_web(port);
    go_tx.send(()).unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and its end of the pipe) is dropped here, the rest unread.
    assert!(
        first.starts_with("Name:") && first.trim_end().ends_with(" web"),
        "the first line of inspect: {first:?}"
    );
    let (code, stderr) = finish(child);
    server.join().unwrap();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    assert_eq!(stderr, "", "nothing on stderr for a closed stdout");
    assert_eq!(code, Some(STDOUT_CLOSED_EXIT), "stderr: {stderr}");
}

#[test]
fn a_reader_that_reads_everything_gets_everything_and_exit_0() {
    // The control: the same fake peer and command with a reader that stays gives the whole
    // output and success, so 141 above comes from the closed pipe alone.
    let (go_tx, go) = mpsc::channel();
    let (port, server) = fake_peer(service_json(1_000), go);
    let mut child = inspect_web(port);
    go_tx.send(()).unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let (code, stderr) = finish(child);
    server.join().unwrap();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(out.starts_with("Name:"), "{}", &out[..out.len().min(200)]);
    assert!(
        out.contains("VARIABLE_999=some value"),
        "the last variable is printed"
    );
}
