#!/usr/bin/env python3
# Import cycles between a crate's modules, from its `crate::…` paths (tests excluded):
#   scripts/module-cycles.py demo/src plugin/src host-harness/src
import re, sys, os, itertools
def graph(src, prefix):
    g={}
    for dp,_,fs in os.walk(src):
        for f in fs:
            if not f.endswith('.rs'): continue
            p=os.path.join(dp,f); rel=os.path.relpath(p,src)[:-3].replace(os.sep,'::')
            rel=re.sub(r'::mod$','',rel)
            if rel in ('lib','main'): continue
            txt=open(p).read()
            txt=txt.split('#[cfg(test)]')[0]
            deps=set()
            for m in re.finditer(r'crate::((?:[a-z_]+::)*[a-z_]+)', txt):
                path=m.group(1).split('::')
                # longest module prefix that exists as a file
                for k in range(len(path),0,-1):
                    cand='::'.join(path[:k])
                    if os.path.exists(os.path.join(src,*path[:k])+'.rs') or os.path.exists(os.path.join(src,*path[:k],'mod.rs')):
                        deps.add(cand); break
            # grouped imports: use crate::x::{a, b}
            for m in re.finditer(r'use crate::([a-z_]+)::\{([^}]*)\}', txt):
                for item in m.group(2).split(','):
                    item=item.strip().split('::')[0]
                    if os.path.exists(os.path.join(src,m.group(1),item)+'.rs'): deps.add(m.group(1)+'::'+item)
            deps.discard(rel)
            g[rel]=deps
    return g
def cycles(g):
    out=[]; 
    idx={}; low={}; st=[]; on=set(); c=[0]
    def sc(v):
        idx[v]=low[v]=c[0]; c[0]+=1; st.append(v); on.add(v)
        for w in g.get(v,()):
            if w not in g: continue
            if w not in idx: sc(w); low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop(); on.discard(w); comp.append(w)
                if w==v: break
            if len(comp)>1: out.append(sorted(comp))
    for v in g:
        if v not in idx: sc(v)
    return out
found = False
for src in sys.argv[1:]:
    c = cycles(graph(src, ''))
    found = found or bool(c)
    print(src, c or 'no cycle')
# `just lint` runs this: an import cycle fails the build.
sys.exit(1 if found else 0)
