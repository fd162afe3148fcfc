#!/usr/bin/env python3
"""Idle CPU of one warren-node per document size (issue 11, item 7). Not a test.

Usage (from the repository root, after `cargo build --release -p warren-node`):

    python3 scripts/idle-cpu.py 0 1000 10000

For each size N: starts a fresh single-node cluster (`warren-node up --init`, API on
127.0.0.1:7790, QUIC on 127.0.0.1:7791, data in a temporary directory), creates N services of 0
replicas through the local API on one keep-alive connection, waits 10 s, then reads the
process's CPU time (utime + stime from /proc) over 30 s. Prints the creation time, the idle
CPU as a percentage of one core, and the resident memory. Stops the node after each size.
"""
import http.client, json, os, subprocess, sys, tempfile, time, shutil
BIN=os.path.join(os.path.dirname(os.path.abspath(__file__)),"..","target","release","warren-node")
def cpu_seconds(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
def measure(n, window=30):
    d=tempfile.mkdtemp(prefix=f"warren-idle-{n}-")
    port=7790
    p=subprocess.Popen([BIN,"up","--init","idle","--name","idle","--data-dir",d,"--api",f"127.0.0.1:{port}","--listen","/ip4/127.0.0.1/udp/7791/quic-v1"],stdout=open(d+"/log","w"),stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                c=http.client.HTTPConnection("127.0.0.1",port,timeout=10); c.request("GET","/v1/status"); r=c.getresponse(); r.read()
                if r.status==200: break
            except Exception: pass
            time.sleep(0.2)
        c=http.client.HTTPConnection("127.0.0.1",port,timeout=30)
        t0=time.time()
        for i in range(n):
            body=json.dumps({"name":f"s{i}","image":"warren/busybox:latest","replicas":0})
            c.request("POST","/v1/services",body,{"Content-Type":"application/json"}); r=c.getresponse(); r.read()
            if r.status>=300: print("create failed",r.status); return
        t1=time.time()
        time.sleep(10)  # let persistence settle
        a=cpu_seconds(p.pid); s=time.time(); time.sleep(window); b=cpu_seconds(p.pid); e=time.time()
        print(f"{n} services: created in {t1-t0:.1f} s; idle CPU {100*(b-a)/(e-s):.1f} % of one core over {e-s:.0f} s; RSS {int(open(f'/proc/{p.pid}/status').read().split('VmRSS:')[1].split()[0])//1024} MiB", flush=True)
    finally:
        p.terminate(); p.wait()
        shutil.rmtree(d, ignore_errors=True)
for n in [int(x) for x in sys.argv[1:]]:
    measure(n)
