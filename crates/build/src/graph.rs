//! Stages as a graph: which stages a target needs (through `FROM <stage>`,
//! `COPY --from=<stage>` and `RUN --mount=from=<stage>`), in an order where every stage
//! comes after those it needs, grouped into waves whose stages can run at once.

use crate::dockerfile::{Dockerfile, InstructionKind};

/// What a stage refers to by name or index: another stage, or an image.
fn references(df: &Dockerfile, index: usize) -> Vec<String> {
    let stage = &df.stages[index];
    let mut out = vec![stage.base.clone()];
    for ins in &stage.instructions {
        match &ins.kind {
            InstructionKind::Copy(c) => out.extend(c.from.clone()),
            InstructionKind::Run(r) => out.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
            _ => {}
        }
    }
    out
}

/// The index of the stage `name` refers to from stage `index`: only stages defined before
/// it count, as in BuildKit (a later stage of that name is an image name).
pub fn stage_index(df: &Dockerfile, index: usize, name: &str) -> Option<usize> {
    let lower = name.to_lowercase();
    if let Some(i) = df.stages[..index]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
    {
        return Some(i);
    }
    match name.parse::<usize>() {
        Ok(i) if i < index => Some(i),
        _ => None,
    }
}

/// The stages directly needed by stage `index`.
pub fn dependencies(df: &Dockerfile, index: usize) -> Vec<usize> {
    let mut deps: Vec<usize> = references(df, index)
        .iter()
        .filter_map(|r| stage_index(df, index, r))
        .collect();
    deps.sort_unstable();
    deps.dedup();
    deps
}

/// Waves of stage indexes that building `target` needs: each stage's dependencies are all
/// in earlier waves; stages the target does not need are left out.
pub fn waves(df: &Dockerfile, target: usize) -> Vec<Vec<usize>> {
    let mut needed = vec![false; df.stages.len()];
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !needed[i] {
            needed[i] = true;
            stack.extend(dependencies(df, i));
        }
    }
    // Dependencies always point to earlier stages, so a stage's wave is one more than the
    // deepest of its dependencies'.
    let mut depth = vec![0usize; df.stages.len()];
    let mut out: Vec<Vec<usize>> = Vec::new();
    for i in 0..df.stages.len() {
        if !needed[i] {
            continue;
        }
        depth[i] = dependencies(df, i)
            .iter()
            .map(|&d| depth[d] + 1)
            .max()
            .unwrap_or(0);
        if out.len() <= depth[i] {
            out.resize(depth[i] + 1, Vec::new());
        }
        out[depth[i]].push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    const MULTI: &str = "FROM base AS a\nRUN x\n\
        FROM base AS b\nRUN y\n\
        FROM base AS unused\nRUN z\n\
        FROM a AS c\nCOPY --from=b /y /y\n\
        FROM base\nCOPY --from=c /x /x\nRUN --mount=type=bind,from=1,target=/m true\n";

    #[test]
    fn unused_stages_are_skipped_and_independent_ones_share_a_wave() {
        let df = parse(MULTI).expect("parse");
        assert_eq!(waves(&df, 4), vec![vec![0, 1], vec![3], vec![4]]);
        assert_eq!(waves(&df, 0), vec![vec![0]]);
        assert_eq!(dependencies(&df, 4), vec![1, 3]);
    }

    #[test]
    fn a_name_only_refers_to_earlier_stages() {
        let df = parse("FROM later\nRUN x\nFROM base AS later\n").expect("parse");
        assert_eq!(stage_index(&df, 0, "later"), None);
        assert_eq!(stage_index(&df, 1, "0"), Some(0));
        assert_eq!(stage_index(&df, 0, "0"), None);
        assert_eq!(stage_index(&df, 1, "LATER"), None);
    }
}
