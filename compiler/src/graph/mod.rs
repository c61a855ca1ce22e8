//! The stage DAG: an edge A -> B for every reference from stage B to stage A (`init: A`,
//! `A.vision`, `A.export`, `A.captions`). Stages run in a topological order; a cycle is an
//! error that shows the whole cycle.

use miette::LabeledSpan;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{Error, Problems};
use crate::source::{FileId, Span};

#[derive(Debug, Clone, Default)]
pub struct StageGraph {
    /// Stage names, in declaration order (node i is stage i).
    pub names: Vec<String>,
    /// For each stage, the stages it depends on (runs after), in first-reference order.
    pub after: Vec<Vec<usize>>,
    /// A topological order; declaration order where a cycle prevents one.
    pub order: Vec<usize>,
}

impl StageGraph {
    /// `edges`: (from, to, span) where stage `from` refers to stage `to` at `span`.
    pub fn build(
        nodes: Vec<(String, Span)>,
        edges: &[(usize, usize, Span)],
        file: FileId,
        problems: &mut Problems,
    ) -> Self {
        let mut g: DiGraph<usize, Span> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
        let mut after: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for &(from, to, span) in edges {
            if !after[from].contains(&to) {
                after[from].push(to);
                // Dependency first: to -> from.
                g.add_edge(idx[to], idx[from], span);
            }
        }
        let order = match toposort(&g, None) {
            Ok(_) => declaration_first(&after),
            Err(_) => {
                report_cycles(&g, &nodes, file, problems);
                (0..nodes.len()).collect()
            }
        };
        StageGraph {
            names: nodes.into_iter().map(|(n, _)| n).collect(),
            after,
            order,
        }
    }
}

/// A topological order that runs stages in declaration order wherever the dependencies
/// allow (Kahn's algorithm, the first-declared ready stage first), so that plans read
/// like the file. `after` must be acyclic.
fn declaration_first(after: &[Vec<usize>]) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = after.len();
    // `after[i]` holds distinct stages: `waiting[i]` counts the dependencies not yet run.
    let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in after.iter().enumerate() {
        for &d in deps {
            users[d].push(i);
        }
    }
    // The ready stages, first-declared on top: O((n + edges) log n) for any number of stages.
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(next)) = ready.pop() {
        order.push(next);
        for &u in &users[next] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.push(Reverse(u));
            }
        }
    }
    order
}

/// One diagnostic per strongly connected component that holds a cycle.
fn report_cycles(
    g: &DiGraph<usize, Span>,
    nodes: &[(String, Span)],
    file: FileId,
    problems: &mut Problems,
) {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.find_edge(scc[0], scc[0]).is_some();
        if scc.len() < 2 && !self_loop {
            continue;
        }
        // Walk the cycle from the component's first-declared stage, staying inside it.
        let start = *scc
            .iter()
            .min_by_key(|n| g[**n])
            .expect("a component has nodes");
        let mut path = vec![start];
        let mut edges_on_path = Vec::new();
        let mut cur = start;
        loop {
            // Prefer returning to the start, else the next unvisited member.
            let next = g
                .edges(cur)
                .map(|e| (petgraph::visit::EdgeRef::target(&e), *e.weight()))
                .filter(|(t, _)| scc.contains(t))
                .min_by_key(|(t, _)| (*t != start, path.contains(t), g[*t]));
            let Some((t, span)) = next else { break };
            edges_on_path.push((cur, t, span));
            if t == start || path.contains(&t) {
                break;
            }
            path.push(t);
            cur = t;
        }
        // Dependencies run start -> ...; the stages refer the other way round.
        let mut names: Vec<String> = path.iter().map(|n| nodes[g[*n]].0.clone()).collect();
        names.push(nodes[g[start]].0.clone());
        let (first, rest) = edges_on_path.split_last().expect("a cycle has an edge");
        let others = rest
            .iter()
            .map(|(dep, user, span)| {
                LabeledSpan::new_with_span(
                    Some(format!(
                        "`{}` refers to `{}`",
                        nodes[g[*user]].0, nodes[g[*dep]].0
                    )),
                    miette::SourceSpan::from(*span),
                )
            })
            .collect();
        problems.push(
            file,
            Error::StageCycle {
                cycle: names.join(" -> "),
                span: first.2.into(),
                others,
            },
        );
    }
}
