#!/usr/bin/env python3
"""Idle CPU of warren-node per document size, per peer (issue 11, item 7). Not a test.

Usage (from the repository root, after `cargo build --release -p warren-node -p warren-cli`):

    python3 scripts/idle-cpu.py 0 1000 10000               # one node
    python3 scripts/idle-cpu.py --peers 3 0 10000          # three peers, one cluster

For each size N: starts a fresh cluster (`warren-node up --init` on 127.0.0.1, API ports
7790, 7792, ..., QUIC ports 7791, 7793, ..., data in a temporary directory; with --peers K
the other K-1 nodes join with tokens from `warren-cli join-token create`), creates N
services of 0 replicas through the first node's local API on one keep-alive connection,
waits until every peer lists N services (the changes gossiped and merged), waits 10 s, then
reads each process's CPU time (utime + stime from /proc) over 30 s. Prints the creation
time, the time until every peer had them, each peer's idle CPU as a percentage of one core
and its resident memory. Stops the nodes after each size.
"""
import http.client, json, os, subprocess, sys, tempfile, time, shutil
ROOT=os.path.join(os.path.dirname(os.path.abspath(__file__)),"..","target","release")
BIN=os.path.join(ROOT,"warren-node")
CLI=os.path.join(ROOT,"warren-cli")
def cpu_seconds(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
def rss_mib(pid):
    return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0])//1024
def get(port, path, timeout=30):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=timeout); c.request("GET",path); r=c.getresponse(); body=r.read()
    return r.status, body
def wait(what, f, timeout):
    end=time.time()+timeout
    while time.time()<end:
        try:
            v=f()
            if v: return v
        except Exception: pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")
def start(i, d, extra):
    port=7790+2*i
    p=subprocess.Popen([BIN,"up","--name",f"idle{i}","--data-dir",f"{d}/n{i}","--api",f"127.0.0.1:{port}",
                        "--listen",f"/ip4/127.0.0.1/udp/{port+1}/quic-v1"]+extra,
                       stdout=open(f"{d}/n{i}.log","w"),stderr=subprocess.STDOUT,stdin=subprocess.DEVNULL)
    wait(f"node {i}'s API", lambda: get(port,"/v1/status")[0]==200, 30)
    return p, port
def measure(n, peers, window=30):
    d=tempfile.mkdtemp(prefix=f"warren-idle-{n}-")
    procs=[]
    try:
        procs.append(start(0, d, ["--init","idle"]))
        for i in range(1, peers):
            token=subprocess.run([CLI,"--peer",f"http://127.0.0.1:{procs[0][1]}","join-token","create"],
                                 capture_output=True,text=True,check=True).stdout.strip()
            procs.append(start(i, d, ["--join",token]))
        wait("every peer a live member", lambda: all(
            sum(1 for m in json.loads(get(port,"/v1/nodes")[1]) if m.get("liveness")=="alive")==peers
            for _,port in procs), 60)
        c=http.client.HTTPConnection("127.0.0.1",procs[0][1],timeout=30)
        t0=time.time()
        for i in range(n):
            body=json.dumps({"name":f"s{i}","image":"warren/busybox:latest","replicas":0})
            c.request("POST","/v1/services",body,{"Content-Type":"application/json"}); r=c.getresponse(); r.read()
            if r.status>=300: print("create failed",r.status); return
        t1=time.time()
        wait("every peer lists every service", lambda: all(len(json.loads(get(port,"/v1/services")[1]))==n for _,port in procs), 600)
        t2=time.time()
        time.sleep(10)  # let persistence settle
        a=[cpu_seconds(p.pid) for p,_ in procs]; s=time.time(); time.sleep(window)
        b=[cpu_seconds(p.pid) for p,_ in procs]; e=time.time()
        cpu=", ".join(f"{100*(y-x)/(e-s):.1f} %" for x,y in zip(a,b))
        rss=", ".join(f"{rss_mib(p.pid)}" for p,_ in procs)
        print(f"{n} services, {peers} peer(s): created in {t1-t0:.1f} s, on every peer after {t2-t0:.1f} s; "
              f"idle CPU per peer {cpu} of one core over {e-s:.0f} s; RSS {rss} MiB", flush=True)
    finally:
        for p,_ in procs: p.terminate()
        for p,_ in procs: p.wait()
        shutil.rmtree(d, ignore_errors=True)
args=sys.argv[1:]
peers=1
if args[:1]==["--peers"]:
    peers=int(args[1]); args=args[2:]
for n in [int(x) for x in args]:
    measure(n, peers)
