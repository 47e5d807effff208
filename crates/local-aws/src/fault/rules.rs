//! Rules: which requests get a fault, and when.

use std::fmt;

use http::Method;

use super::faults::Fault;
use super::wire::RequestInfo;

/// Which requests a [`Rule`] applies to.
///
/// The AWS JSON protocols (Kinesis, DynamoDB) name the operation in the `X-Amz-Target` header
/// (`Kinesis_20131202.PutRecords`); [`Op::Target`] matches the part after the dot. S3 speaks
/// REST and has no such header, so [`Op::Rest`] matches by method and optionally a path prefix.
/// A `&str` converts into [`Op::Target`], so `Rule::on("PutRecords")` reads naturally.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Every request.
    Any,
    /// A JSON-protocol operation by name, e.g. `"PutRecords"` or `"UpdateItem"`.
    Target(String),
    /// A REST (S3) request, i.e. one without `X-Amz-Target`, by method and path prefix.
    Rest {
        /// The HTTP method, e.g. `PUT` for PutObject and UploadPart.
        method: Method,
        /// Only paths starting with this (e.g. `"/my-bucket/prefix/"`); `None` matches all.
        path_prefix: Option<String>,
    },
}

impl Op {
    /// A JSON-protocol operation by name, e.g. `Op::target("GetRecords")`.
    pub fn target(name: impl Into<String>) -> Op {
        Op::Target(name.into())
    }

    /// Every S3 (REST) request with this method.
    pub fn s3(method: Method) -> Op {
        Op::Rest {
            method,
            path_prefix: None,
        }
    }

    /// S3 (REST) requests with this method whose path starts with `path_prefix`. With
    /// path-style addressing (what the local stack uses) the path is `/bucket/key`.
    pub fn s3_path(method: Method, path_prefix: impl Into<String>) -> Op {
        Op::Rest {
            method,
            path_prefix: Some(path_prefix.into()),
        }
    }

    pub(crate) fn matches(&self, req: &RequestInfo) -> bool {
        match self {
            Op::Any => true,
            Op::Target(name) => req.operation.as_deref() == Some(name.as_str()),
            Op::Rest {
                method,
                path_prefix,
            } => {
                req.operation.is_none()
                    && req.method == *method
                    && path_prefix
                        .as_deref()
                        .is_none_or(|prefix| req.path.starts_with(prefix))
            }
        }
    }
}

impl From<&str> for Op {
    fn from(name: &str) -> Op {
        Op::target(name)
    }
}

impl From<String> for Op {
    fn from(name: String) -> Op {
        Op::Target(name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Any => f.write_str("*"),
            Op::Target(name) => f.write_str(name),
            Op::Rest {
                method,
                path_prefix: None,
            } => write!(f, "{method}"),
            Op::Rest {
                method,
                path_prefix: Some(prefix),
            } => write!(f, "{method} {prefix}*"),
        }
    }
}

/// Identifies an injected rule, for [`FaultProxy::fired`](super::FaultProxy::fired) and
/// [`FaultProxy::remove`](super::FaultProxy::remove).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub(crate) u64);

/// A fault and the requests it applies to; build one with [`Rule::on`].
///
/// A rule keeps two counters: how many matching requests it was consulted on, and how many
/// times it fired. Whether it fires on a request is a pure function of those counters (and of
/// its seeded generator, for [`RuleBuilder::with_probability`]), so a test that sends the same
/// requests in the same order always sees the same faults.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) op: Op,
    pub(crate) after: u64,
    pub(crate) every: u64,
    pub(crate) budget: Option<u64>,
    pub(crate) chance: Option<Chance>,
    pub(crate) fault: Fault,
}

impl Rule {
    /// Starts a rule for the requests matching `op`: `Rule::on("PutRecords")`,
    /// `Rule::on(Op::s3(Method::PUT))`, `Rule::on(Op::Any)`.
    ///
    /// Without selectors the rule fires on every matching request until it is removed or the
    /// proxy is [cleared](super::FaultProxy::clear).
    pub fn on(op: impl Into<Op>) -> RuleBuilder {
        RuleBuilder {
            op: op.into(),
            after: 0,
            every: 1,
            budget: None,
            chance: None,
        }
    }

    /// The requests this rule applies to.
    pub fn op(&self) -> &Op {
        &self.op
    }

    /// The fault this rule injects.
    pub fn fault(&self) -> &Fault {
        &self.fault
    }
}

/// Selects which matching requests a rule fires on; finish with [`RuleBuilder::fault`].
///
/// The selectors compose in a fixed order, whatever order they are called in: first
/// [`after`](Self::after) lets `k` matching requests through, then [`every`](Self::every)
/// picks every `n`th of the rest, then [`with_probability`](Self::with_probability) draws, and
/// [`times`](Self::times) caps how often the rule fires in total.
#[derive(Clone, Debug)]
#[must_use = "a rule does nothing until `.fault(..)` finishes it and it is injected"]
pub struct RuleBuilder {
    op: Op,
    after: u64,
    every: u64,
    budget: Option<u64>,
    chance: Option<Chance>,
}

impl RuleBuilder {
    /// Fires at most `n` times, then stays inert (it no longer consumes requests, so a later
    /// rule for the same operation takes over). `times(3)` on its own means "the next three".
    pub fn times(mut self, n: u64) -> Self {
        self.budget = Some(n);
        self
    }

    /// Fires once: the same as `times(1)`.
    pub fn once(self) -> Self {
        self.times(1)
    }

    /// Fires on every matching request until the rule is removed (the default; undoes
    /// [`times`](Self::times)).
    pub fn always(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Lets the first `k` matching requests through untouched.
    pub fn after(mut self, k: u64) -> Self {
        self.after = k;
        self
    }

    /// Fires on every `n`th matching request only (the `n`th, `2n`th, ... counted after
    /// [`after`](Self::after)). `every(1)` is every request.
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn every(mut self, n: u64) -> Self {
        assert!(n > 0, "every(0) would never fire");
        self.every = n;
        self
    }

    /// Fires on each selected request with probability `p` (clamped to 0..=1), drawn from a
    /// small generator seeded with `seed`: the same seed and the same request order give the
    /// same faults, run after run. Meant for fault storms.
    pub fn with_probability(mut self, p: f64, seed: u64) -> Self {
        self.chance = Some(Chance {
            p: p.clamp(0.0, 1.0),
            state: seed,
        });
        self
    }

    /// Finishes the rule with the fault it injects.
    pub fn fault(self, fault: Fault) -> Rule {
        Rule {
            op: self.op,
            after: self.after,
            every: self.every,
            budget: self.budget,
            chance: self.chance,
            fault,
        }
    }
}

/// A seeded Bernoulli draw: SplitMix64, which is tiny, fast and good enough for picking which
/// requests fail (no need for a `rand` dependency).
#[derive(Clone, Debug)]
pub(crate) struct Chance {
    p: f64,
    state: u64,
}

impl Chance {
    fn draw(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits give a uniform float in [0, 1).
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < self.p
    }
}

/// A rule as installed in a proxy, with its counters.
#[derive(Debug)]
pub(crate) struct ActiveRule {
    pub(crate) id: RuleId,
    pub(crate) rule: Rule,
    /// Matching requests this rule was consulted on while it still had budget.
    pub(crate) matched: u64,
    pub(crate) fired: u64,
}

impl ActiveRule {
    pub(crate) fn new(id: RuleId, rule: Rule) -> ActiveRule {
        ActiveRule {
            id,
            rule,
            matched: 0,
            fired: 0,
        }
    }

    /// Decides whether this rule fires on `req`, updating its counters.
    pub(crate) fn consult(&mut self, req: &RequestInfo) -> bool {
        if !self.rule.op.matches(req) {
            return false;
        }
        if self.rule.budget.is_some_and(|budget| self.fired >= budget) {
            return false;
        }
        self.matched += 1;
        let Some(position) = self.matched.checked_sub(self.rule.after).filter(|&n| n > 0) else {
            return false;
        };
        if position % self.rule.every != 0 {
            return false;
        }
        // Draw only for requests that passed the deterministic selectors, so adding `after`
        // or `every` does not shift which requests a given seed picks among the rest.
        if let Some(chance) = &mut self.rule.chance
            && !chance.draw()
        {
            return false;
        }
        self.fired += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: Option<&str>, method: Method, path: &str) -> RequestInfo {
        RequestInfo::for_test(op, method, path)
    }

    fn pattern(rule: Rule, n: usize) -> String {
        let mut active = ActiveRule::new(RuleId(0), rule);
        let req = request(Some("PutRecords"), Method::POST, "/");
        (0..n)
            .map(|_| if active.consult(&req) { 'X' } else { '.' })
            .collect()
    }

    #[test]
    fn selectors_compose() {
        let f = Fault::throttle;
        assert_eq!(pattern(Rule::on("PutRecords").fault(f()), 4), "XXXX");
        assert_eq!(
            pattern(Rule::on("PutRecords").times(2).fault(f()), 4),
            "XX.."
        );
        assert_eq!(
            pattern(Rule::on("PutRecords").after(2).fault(f()), 4),
            "..XX"
        );
        assert_eq!(
            pattern(Rule::on("PutRecords").every(3).fault(f()), 7),
            "..X..X."
        );
        assert_eq!(
            pattern(
                Rule::on("PutRecords").after(1).every(2).times(2).fault(f()),
                8
            ),
            "..X.X..."
        );
        assert_eq!(pattern(Rule::on("GetRecords").fault(f()), 3), "...");
    }

    #[test]
    fn probability_is_seeded() {
        let storm = |seed| {
            Rule::on("PutRecords")
                .with_probability(0.3, seed)
                .fault(Fault::throttle())
        };
        let a = pattern(storm(7), 1000);
        assert_eq!(a, pattern(storm(7), 1000));
        assert_ne!(a, pattern(storm(8), 1000));
        let hits = a.chars().filter(|&c| c == 'X').count();
        assert!((200..400).contains(&hits), "{hits} hits for p = 0.3");
        assert_eq!(
            pattern(
                Rule::on("PutRecords")
                    .with_probability(0.0, 1)
                    .fault(Fault::throttle()),
                50
            ),
            ".".repeat(50)
        );
    }

    #[test]
    fn rest_matching() {
        let put = request(None, Method::PUT, "/bucket/a/b");
        let target = request(Some("PutRecords"), Method::POST, "/");
        assert!(Op::s3(Method::PUT).matches(&put));
        assert!(Op::s3_path(Method::PUT, "/bucket/a/").matches(&put));
        assert!(!Op::s3_path(Method::PUT, "/other/").matches(&put));
        assert!(!Op::s3(Method::GET).matches(&put));
        assert!(!Op::s3(Method::POST).matches(&target));
        assert!(Op::Any.matches(&put) && Op::Any.matches(&target));
    }
}
