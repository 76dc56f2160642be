#!/usr/bin/env python3
"""Instructions per call by where the code lives, from two callgrind runs of
benches/cpu_per_call.rs with different call counts (BENCHMARKS.md, "Where a call's time goes
now"):

    python3 benches/callgrind_groups.py cg.pipe.2048 cg.pipe.4096 2048 [--rest]

prints (Ir(second) - Ir(first)) / calls per group, exclusive, both ends of the call. Functions
inlined from the standard library are grouped by the function they were inlined into. With a
fourth argument, the largest functions left in "the rest" are listed too.
"""
import subprocess,sys,re,collections
def load(f):
    out=subprocess.run(['callgrind_annotate','--auto=no','--threshold=100',f],capture_output=True,text=True).stdout
    d=collections.defaultdict(int)
    for line in out.splitlines():
        m=re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)',line)
        if m and 'PROGRAM TOTALS' not in line: d[m.group(2)]+=int(m.group(1).replace(',',''))
    return d
a,b,n=load(sys.argv[1]),load(sys.argv[2]),float(sys.argv[3])
rules=[
 ('malloc and free', r'malloc\.c|arena\.c|/malloc/'),
 ('memcpy, memcmp, memset', r'memmove|memcpy|memcmp|memset|memchr'),
 ('tokio scheduler, I/O driver, timer', r'tokio-[\d.]+/src/(runtime|io|net|time)'),
 ('tokio sync, atomic wakers', r'tokio-[\d.]+/src/sync|futures-core.*task|atomic_waker|futures_util.*task'),
 ('tokio task-local, tracing', r'task_local|tracing'),
 ('daemon call path', r'rmi-core/src/daemon/(call|context)\.rs'),
 ('daemon request loop', r'rmi-core/src/daemon/(connection|signal|listener|mod)\.rs'),
 ('proxy call path', r'rmi-core/src/proxy/'),
 ('outbox', r'rmi-core/src/transport/outbox\.rs'),
 ('framing', r'rmi-core/src/transport\.rs|rmi-core/src/protocol/frame'),
 ('codec (route, arguments, results, arena)', r'rmi-core/src/protocol/codec'),
 ('bincode and serde', r'bincode|serde'),
 ('generated dispatch, method, format!', r'benches/cpu_per_call|fmt|alloc/src/(fmt|string)'),
 ('bytes', r'bytes-[\d.]+'),
 ('kernel entry (syscall stubs in libc)', r'libc\.so|sysdeps|nptl'),
]
fnrules=[
 ('daemon call path', r'rmi_core::daemon::(call|context)'),
 ('daemon request loop', r'rmi_core::daemon'),
 ('proxy call path', r'rmi_core::proxy|compare::|cpu_per_call::'),
 ('outbox', r'rmi_core::transport::outbox'),
 ('framing', r'rmi_core::transport|rmi_core::protocol::frame'),
 ('codec (route, arguments, results, arena)', r'rmi_core::protocol::codec|from_utf8'),
 ('bincode and serde', r'bincode|serde'),
 ('tokio scheduler, I/O driver, timer', r'tokio::runtime|tokio::io|tokio::net|tokio::time|Timespec|Instant'),
 ('tokio sync, atomic wakers', r'tokio::sync|futures_core|futures_util::task|AtomicWaker'),
 ('tokio task-local, tracing', r'task_local|tracing|LocalKey'),
 ('bytes', r'bytes::'),
 ('malloc and free', r'__rdl_alloc|__rust_alloc|alloc::alloc|RawVec|Vec<T,A> as core::clone'),
 ('generated dispatch, method, format!', r'fmt|Dispatch'),
 ('hashing', r'foldhash|hash'),
]
agg=collections.defaultdict(float); other=collections.defaultdict(float)
for k in set(a)|set(b):
    v=(b.get(k,0)-a.get(k,0))/n
    path,_,fn=k.partition(':')
    if path.startswith('/rustc/'):
        for name,pat in fnrules:
            if re.search(pat,fn): agg[name]+=v; break
        else:
            agg['the rest']+=v; other[k]+=v
        continue
    for name,pat in rules:
        if re.search(pat,path): agg[name]+=v; break
    else:
        for name,pat in fnrules:
            if re.search(pat,fn): agg[name]+=v; break
        else:
            agg['the rest']+=v; other[k]+=v
tot=sum(agg.values())
print(f"total {tot:.0f}")
for k,v in sorted(agg.items(),key=lambda x:-x[1]): print(f"{v:8.0f} {100*v/tot:5.1f}%  {k}")
if len(sys.argv)>4:
    for k,v in sorted(other.items(),key=lambda x:-x[1])[:15]: print(f"   {v:7.1f} {k[:140]}")
