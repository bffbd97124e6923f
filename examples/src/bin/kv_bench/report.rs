//! Printing the figures: one JSON line per result and one summary line, and the medians and
//! best runs the summary is made of.

use std::future::Future;

use serde_json::Value;

/// The summary line's ratios, by name.
pub type Summary = serde_json::Map<String, Value>;

/// Prints one JSON line.
pub fn emit(value: &Value) {
    println!("{value}");
}

/// `field` of a result as a number, NaN if it has none.
pub fn number(value: &Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or(f64::NAN)
}

/// Every run of one implementation in a comparison.
pub struct Runs(pub Vec<Value>);

impl Runs {
    fn sorted_by(&self, field: &str) -> Vec<&Value> {
        let mut runs: Vec<&Value> = self.0.iter().collect();
        runs.sort_by(|a, b| number(a, field).total_cmp(&number(b, field)));
        runs
    }

    /// The median of `field` over the runs.
    pub fn median(&self, field: &str) -> f64 {
        let runs = self.sorted_by(field);
        runs.get(runs.len() / 2)
            .map_or(f64::NAN, |run| number(run, field))
    }

    /// The lowest value: the best run for times, sizes and latencies.
    pub fn lowest(&self, field: &str) -> f64 {
        self.sorted_by(field)
            .first()
            .map_or(f64::NAN, |run| number(run, field))
    }

    /// The values of `field` in run order (times `scale`), for the figures printed beside the
    /// medians.
    pub fn each(&self, field: &str, scale: f64) -> String {
        let values: Vec<String> = self
            .0
            .iter()
            .map(|run| format!("{:.0}", number(run, field) * scale))
            .collect();
        values.join(", ")
    }
}

/// Runs `measure` for each implementation `repeats` times, alternating, printing every result;
/// returns the runs per implementation, in the order given.
pub async fn compare<F, Fut>(
    implementations: &[&str],
    repeats: usize,
    mut measure: F,
) -> anyhow::Result<Vec<Runs>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Value>>,
{
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); implementations.len()];
    for _ in 0..repeats {
        for (index, implementation) in implementations.iter().enumerate() {
            let result = measure((*implementation).to_owned()).await?;
            emit(&result);
            results[index].push(result);
        }
    }
    Ok(results.into_iter().map(Runs).collect())
}
