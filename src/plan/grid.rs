//! The grid a plan sweeps: its axes (pool sizes, rates, any setting) and their values.

/// One swept parameter and its values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Axis {
    Projects(Vec<u64>),
    Rate(Vec<f64>),
    /// Multiples of a log's demand (`--growth`): each log's `scale`.
    Growth(Vec<f64>),
    Set {
        path: String,
        values: Vec<String>,
    },
}

impl Axis {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Projects(_) => "projects",
            Self::Rate(_) => "rate",
            Self::Growth(_) => "growth",
            Self::Set { path, .. } => path,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Projects(v) => v.len(),
            Self::Rate(v) | Self::Growth(v) => v.len(),
            Self::Set { values, .. } => values.len(),
        }
    }

    pub(crate) fn label(&self, i: usize) -> String {
        match self {
            Self::Projects(v) => v[i].to_string(),
            Self::Rate(v) => trim(v[i]),
            Self::Growth(v) => format!("{}×", trim(v[i])),
            Self::Set { values, .. } => values[i].clone(),
        }
    }
}

pub(crate) fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Values of a sweep: `a,b,c`, or `lo..hi` (inclusive, step 1), or `lo..hi:step`.
pub(crate) fn numbers(spec: &str, flag: &str) -> Result<Vec<f64>, String> {
    let bad = |why: &str| format!("--sweep {flag}: {why} (write a,b,c or lo..hi or lo..hi:step)");
    let parse = |s: &str| s.trim().parse::<f64>().map_err(|_| bad(&format!("'{s}' is not a number")));
    let values = if let Some((lo, rest)) = spec.split_once("..") {
        let (hi, step) = match rest.split_once(':') {
            Some((hi, step)) => (parse(hi)?, parse(step)?),
            None => (parse(rest)?, 1.0),
        };
        let lo = parse(lo)?;
        if step.is_nan() || step <= 0.0 || hi < lo {
            return Err(bad("the range must rise by a positive step"));
        }
        let n = ((hi - lo) / step + 1e-9).floor() + 1.0;
        if !(n.is_finite() && n <= 1000.0) {
            return Err(bad("more than 1000 values"));
        }
        let n = n as usize;
        (0..n).map(|i| lo + step * i as f64).collect()
    } else {
        spec.split(',').map(parse).collect::<Result<Vec<_>, _>>()?
    };
    if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v <= 0.0) {
        return Err(bad("values must be positive numbers"));
    }
    Ok(values)
}

pub(crate) fn parse_axis(spec: &str) -> Result<Axis, String> {
    let (name, values) = spec.split_once('=').ok_or_else(|| format!("--sweep {spec}: expected NAME=VALUES"))?;
    let name = name.trim();
    match name {
        "projects" => {
            let v = numbers(values, name)?;
            if v.iter().any(|x| x.fract() != 0.0 || *x > 10_000.0) {
                return Err("--sweep projects: whole numbers from 1 to 10000".into());
            }
            Ok(Axis::Projects(v.into_iter().map(|x| x as u64).collect()))
        }
        "rate" => Ok(Axis::Rate(numbers(values, name)?)),
        path => {
            let values: Vec<String> = values.split(',').map(|s| s.trim().to_owned()).collect();
            if path.is_empty() || values.iter().any(String::is_empty) {
                return Err(format!("--sweep {spec}: expected PATH=v1,v2,…"));
            }
            Ok(Axis::Set { path: path.to_owned(), values })
        }
    }
}

/// Most points a grid may have.
pub(crate) const MAX_POINTS: usize = 100_000;
