//! The key pool: projects own quotas, keys belong to projects, and each key is enabled or
//! disabled, active or revoked. From it the pool derives, on every event, which quota buckets
//! may serve each model and the pool's capacity — never from a stale cache.

use std::collections::HashMap;

use super::limits::{Ceilings, Limits};
use super::store::BucketId;

/// A model and its default limits.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Model name, as in the API path (`gemini-2.5-flash`).
    pub name: String,
    /// Limits per project unless the project overrides them.
    pub limits: Limits,
}

/// A Google Cloud project.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectSpec {
    /// The project's id.
    pub id: String,
    /// Its limits per model, in the order of the pool's models.
    pub limits: Vec<Limits>,
}

/// A key as configured: its id (a label, never the secret) and its project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The key's id.
    pub id: String,
    /// The id of the project it belongs to.
    pub project: String,
}

/// Everything the pool starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolSpec {
    /// Models served.
    pub models: Vec<ModelSpec>,
    /// Projects and their quotas.
    pub projects: Vec<ProjectSpec>,
    /// Keys, enabled and active.
    pub keys: Vec<KeySpec>,
}

/// A change to the pool while it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolEvent {
    /// A new key joins (enabled, active).
    Add(KeySpec),
    /// A key leaves the pool for good.
    Remove(String),
    /// A disabled key serves again.
    Enable(String),
    /// A key stops serving until enabled.
    Disable(String),
    /// The provider revoked a key (deleted or leaked): it never serves again.
    Revoke(String),
}

/// Whether quota is believed to be per project (true for Gemini) or per key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuotaScope {
    /// Every key of a project shares the project's quota.
    #[default]
    Project,
    /// The reference mistake: each key is believed to have a quota of its own.
    Key,
}

/// Dense index of a key in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

/// A key's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// The key's id.
    pub id: String,
    /// Index of its project.
    pub project: usize,
    /// Enabled by the operator.
    pub enabled: bool,
    /// Revoked by the provider.
    pub revoked: bool,
    /// Removed from the pool.
    pub removed: bool,
}

impl KeyState {
    /// Whether the key may serve requests.
    pub fn usable(&self) -> bool {
        self.enabled && !self.revoked && !self.removed
    }
}

/// The keys that can serve one model through one quota bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The shared bucket.
    pub bucket: BucketId,
    /// Index of the bucket's project.
    pub project: usize,
    /// Usable keys drawing on it.
    pub keys: Vec<KeyId>,
}

/// Errors from pool events.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The event names a key the pool does not have.
    #[error("unknown key '{0}'")]
    UnknownKey(String),
    /// A key with this id is already in the pool.
    #[error("key '{0}' is already in the pool")]
    DuplicateKey(String),
    /// The key's project is not configured.
    #[error("unknown project '{0}'")]
    UnknownProject(String),
}

/// Sums over the distinct projects that can serve a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapacityTotals {
    /// Distinct projects (buckets in key scope) with at least one usable key.
    pub buckets: usize,
    /// Usable keys.
    pub keys: usize,
    /// Sum of the provider's limits over those buckets (`tpd` summed where limited).
    pub limits: [u64; 4],
    /// Sum of what the engine may use of them at high priority (after the safety margin).
    pub usable: [u64; 4],
}

pub(crate) struct Pool {
    pub(crate) models: Vec<ModelSpec>,
    pub(crate) projects: Vec<ProjectSpec>,
    pub(crate) keys: Vec<KeyState>,
    index: HashMap<String, KeyId>,
    scope: QuotaScope,
    safety: f64,
    reserve: f64,
    /// Per model: groups of usable keys by bucket, in project (or key) order.
    pub(crate) groups: Vec<Vec<Group>>,
    /// Per bucket: ceilings for [normal, high] priority.
    pub(crate) ceilings: Vec<[Ceilings; 2]>,
    /// Per bucket: [`Ceilings::reciprocals`] of `ceilings`.
    pub(crate) inverse: Vec<[[f64; 4]; 2]>,
    /// Per model: capacity totals.
    pub(crate) totals: Vec<CapacityTotals>,
    /// Per model and priority: the largest TPM and TPD ceilings over usable buckets.
    pub(crate) largest: Vec<[[u64; 2]; 2]>,
}

impl Pool {
    pub(crate) fn new(spec: PoolSpec, scope: QuotaScope, safety: f64, reserve: f64) -> Result<Self, PoolError> {
        let mut pool = Pool {
            models: spec.models,
            projects: spec.projects,
            keys: Vec::new(),
            index: HashMap::new(),
            scope,
            safety,
            reserve,
            groups: Vec::new(),
            ceilings: Vec::new(),
            inverse: Vec::new(),
            totals: Vec::new(),
            largest: Vec::new(),
        };
        for k in spec.keys {
            pool.add(k)?;
        }
        pool.rebuild();
        Ok(pool)
    }

    pub(crate) fn key(&self, id: &str) -> Option<KeyId> {
        self.index.get(id).copied()
    }

    pub(crate) fn bucket_count(&self) -> usize {
        let owners = match self.scope {
            QuotaScope::Project => self.projects.len(),
            QuotaScope::Key => self.keys.len(),
        };
        owners * self.models.len()
    }

    pub(crate) fn bucket_of(&self, key: KeyId, model: usize) -> BucketId {
        let owner = match self.scope {
            QuotaScope::Project => self.keys[key.0 as usize].project,
            QuotaScope::Key => key.0 as usize,
        };
        BucketId((owner * self.models.len() + model) as u32)
    }

    /// The project and model of a bucket.
    pub(crate) fn bucket_owner(&self, bucket: BucketId) -> (usize, usize) {
        let m = self.models.len();
        let owner = bucket.0 as usize / m;
        let project = match self.scope {
            QuotaScope::Project => owner,
            QuotaScope::Key => self.keys[owner].project,
        };
        (project, bucket.0 as usize % m)
    }

    fn add(&mut self, k: KeySpec) -> Result<(), PoolError> {
        if self.index.contains_key(&k.id) {
            return Err(PoolError::DuplicateKey(k.id));
        }
        let project = self
            .projects
            .iter()
            .position(|p| p.id == k.project)
            .ok_or_else(|| PoolError::UnknownProject(k.project.clone()))?;
        self.index.insert(k.id.clone(), KeyId(self.keys.len() as u32));
        self.keys.push(KeyState { id: k.id, project, enabled: true, revoked: false, removed: false });
        Ok(())
    }

    pub(crate) fn apply(&mut self, event: PoolEvent) -> Result<(), PoolError> {
        let mut set = |id: String, f: fn(&mut KeyState)| -> Result<(), PoolError> {
            let k = self.index.get(&id).ok_or(PoolError::UnknownKey(id))?;
            f(&mut self.keys[k.0 as usize]);
            Ok(())
        };
        match event {
            PoolEvent::Add(k) => self.add(k)?,
            PoolEvent::Remove(id) => set(id, |k| k.removed = true)?,
            PoolEvent::Enable(id) => set(id, |k| k.enabled = true)?,
            PoolEvent::Disable(id) => set(id, |k| k.enabled = false)?,
            PoolEvent::Revoke(id) => set(id, |k| k.revoked = true)?,
        }
        self.rebuild();
        Ok(())
    }

    /// Recomputes groups, ceilings and capacity from the keys' states.
    fn rebuild(&mut self) {
        let models = self.models.len();
        self.ceilings = (0..self.bucket_count())
            .map(|b| {
                let (project, model) = self.bucket_owner(BucketId(b as u32));
                let limits = &self.projects[project].limits[model];
                [
                    Ceilings::from_limits(limits, self.safety, self.reserve),
                    Ceilings::from_limits(limits, self.safety, 0.0),
                ]
            })
            .collect();
        self.inverse = self.ceilings.iter().map(|[n, h]| [n.reciprocals(), h.reciprocals()]).collect();
        self.groups = vec![Vec::new(); models];
        self.totals = vec![CapacityTotals::default(); models];
        self.largest = vec![[[0; 2]; 2]; models];
        let mut slot: Vec<Option<usize>> = vec![None; self.bucket_count()];
        for (i, key) in self.keys.iter().enumerate() {
            if !key.usable() {
                continue;
            }
            for model in 0..models {
                let limits = self.projects[key.project].limits[model];
                if !limits.is_usable() {
                    continue;
                }
                let bucket = self.bucket_of(KeyId(i as u32), model);
                let groups = &mut self.groups[model];
                match slot[bucket.0 as usize] {
                    Some(g) => groups[g].keys.push(KeyId(i as u32)),
                    None => {
                        slot[bucket.0 as usize] = Some(groups.len());
                        groups.push(Group { bucket, project: key.project, keys: vec![KeyId(i as u32)] });
                    }
                }
                self.totals[model].keys += 1;
            }
        }
        for model in 0..models {
            self.groups[model].sort_by_key(|g| g.bucket);
            for g in &self.groups[model] {
                let limits = self.projects[g.project].limits[model];
                let t = &mut self.totals[model];
                t.buckets += 1;
                let high = self.ceilings[g.bucket.0 as usize][1];
                for d in super::limits::Dimension::ALL {
                    let (l, u) = (limits.get(d), high.get(d));
                    t.limits[d.index()] = t.limits[d.index()].saturating_add(if l == u64::MAX { 0 } else { l });
                    t.usable[d.index()] = t.usable[d.index()].saturating_add(if u == u64::MAX { 0 } else { u });
                }
                for p in 0..2 {
                    let c = self.ceilings[g.bucket.0 as usize][p];
                    let big = &mut self.largest[model][p];
                    big[0] = big[0].max(c.get(super::limits::Dimension::Tpm));
                    big[1] = big[1].max(c.get(super::limits::Dimension::Tpd));
                }
            }
        }
    }
}
