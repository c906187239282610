//! The key pool: projects own quotas, keys belong to projects, and each key is enabled or
//! disabled, active or revoked. From it the pool derives, on every event, which quota buckets
//! may serve each model and the pool's capacity — never from a stale cache.
//!
//! A [`Pool`] is an immutable snapshot: a change builds the next one, which the engine swaps
//! in while admissions go on reading the one they started with.

use std::collections::HashMap;

use super::limits::{Ceilings, Dimension, Limits};
use super::store::{BucketId, BucketKey};

/// A model and its default limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Model name, as in the API path (`gemini-2.5-flash`).
    pub name: String,
    /// Limits per project unless the project overrides them.
    pub limits: Limits,
}

/// A Google Cloud project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectSpec {
    /// The project's id: with the model's name, the stable identity of its quota buckets.
    pub id: String,
    /// Its limits per model, in the order of the pool's models; `None` where the project
    /// does not serve the model.
    pub limits: Vec<Option<Limits>>,
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
    /// A new project joins, with its limits per model (in the pool's model order).
    AddProject(ProjectSpec),
    /// A project's limits for one model change (the provider cut or raised them).
    SetLimits {
        /// The project's id.
        project: String,
        /// The model's name.
        model: String,
        /// The new limits.
        limits: Limits,
    },
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

crate::setting!(QuotaScope { Project => "project", Key => "key" });

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

/// Errors from building the pool or changing it. Key ids appear redacted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// The event names a key the pool does not have.
    #[error("unknown key '{}'", crate::redact(.0))]
    UnknownKey(String),
    /// A key with this id is already in the pool.
    #[error("key '{}' is already in the pool", crate::redact(.0))]
    DuplicateKey(String),
    /// The key's project is not configured.
    #[error("unknown project '{0}'")]
    UnknownProject(String),
    /// A project with this id is already in the pool.
    #[error("project '{0}' is already in the pool")]
    DuplicateProject(String),
    /// The event names a model the pool does not serve.
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// A model is listed twice.
    #[error("model '{0}' is listed twice")]
    DuplicateModel(String),
    /// A project lists limits for a different number of models than the pool has.
    #[error("project '{project}' lists limits for {given} models; the pool has {models}")]
    LimitsPerModel {
        /// The project's id.
        project: String,
        /// How many it lists.
        given: usize,
        /// How many models the pool has.
        models: usize,
    },
    /// A limit of zero: it would mean "never" on one dimension. A project that must not
    /// serve a model has no limits for it (`None`) instead.
    #[error("project '{project}' has a {dimension} limit of 0 for '{model}'; give it no limits for the model to keep the model off the project")]
    ZeroLimit {
        /// The project's id.
        project: String,
        /// The model's name.
        model: String,
        /// The dimension.
        dimension: Dimension,
    },
}

/// Sums over the distinct projects that can serve a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CapacityTotals {
    /// Distinct projects (buckets in key scope) with at least one usable key.
    pub(crate) buckets: usize,
    /// Usable keys.
    pub(crate) keys: usize,
    /// Sum of the provider's limits over those buckets (`tpd` summed where limited).
    pub(crate) limits: [u64; 4],
    /// Sum of what the engine may use of them at high priority (after the safety margin).
    pub(crate) usable: [u64; 4],
}

/// Per bucket: ceilings for [normal, high] priority and their reciprocals.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BucketLimits {
    pub(crate) ceilings: [Ceilings; 2],
    pub(crate) inverse: [[f64; 4]; 2],
    /// The bucket's project and model.
    pub(crate) owner: (usize, usize),
}

/// One snapshot of the pool: its keys and projects, and what follows from them.
#[derive(Clone, Debug)]
pub struct Pool {
    models: Vec<ModelSpec>,
    projects: Vec<ProjectSpec>,
    keys: Vec<KeyState>,
    index: HashMap<String, KeyId>,
    project_index: HashMap<String, usize>,
    scope: QuotaScope,
    safety: f64,
    reserve: f64,
    /// Per model: groups of usable keys by bucket, in project (or key) order.
    pub(crate) groups: Vec<Vec<Group>>,
    /// Per model: the limits of each group's bucket, beside `groups` (read on every admission).
    pub(crate) group_limits: Vec<Vec<BucketLimits>>,
    /// Per bucket id (as the store numbers them): limits, where the bucket is known.
    pub(crate) buckets: Vec<Option<BucketLimits>>,
    /// Per model: capacity totals.
    pub(crate) totals: Vec<CapacityTotals>,
    /// Per model and priority: the largest TPM and TPD ceilings over usable buckets.
    pub(crate) largest: Vec<[[u64; 2]; 2]>,
}

impl Pool {
    /// A pool from `spec`; `bucket` names each quota bucket by its stable key.
    pub(crate) fn new<E>(
        spec: PoolSpec,
        scope: QuotaScope,
        (safety, reserve): (f64, f64),
        bucket: &mut dyn FnMut(&BucketKey) -> Result<BucketId, E>,
    ) -> Result<Self, PoolBuildError<E>> {
        let mut pool = Pool {
            models: Vec::new(),
            projects: Vec::new(),
            keys: Vec::new(),
            index: HashMap::new(),
            project_index: HashMap::new(),
            scope,
            safety,
            reserve,
            groups: Vec::new(),
            group_limits: Vec::new(),
            buckets: Vec::new(),
            totals: Vec::new(),
            largest: Vec::new(),
        };
        for m in spec.models {
            if pool.models.iter().any(|x| x.name == m.name) {
                return Err(PoolError::DuplicateModel(m.name).into());
            }
            check_limits("(model default)", &m.name, &m.limits)?;
            pool.models.push(m);
        }
        for p in spec.projects {
            pool.add_project(p)?;
        }
        for k in spec.keys {
            pool.add(k)?;
        }
        pool.rebuild(bucket).map_err(PoolBuildError::Store)?;
        Ok(pool)
    }

    /// The models, in index order.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// The projects, in index order (a project, once added, keeps its index).
    pub fn projects(&self) -> &[ProjectSpec] {
        &self.projects
    }

    /// Every key the pool has known, including removed and revoked ones.
    pub fn keys(&self) -> &[KeyState] {
        &self.keys
    }

    /// The key with id `id`.
    pub fn key(&self, id: &str) -> Option<KeyId> {
        self.index.get(id).copied()
    }

    /// Index of model `name`.
    pub fn model(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// The quota buckets that can serve `model` now, with their usable keys.
    pub fn groups(&self, model: usize) -> &[Group] {
        &self.groups[model]
    }

    /// The projects that can serve `model` now (one entry per quota bucket).
    pub fn serving_projects(&self, model: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.groups[model].iter().map(|g| g.project)
    }

    /// What the engine may use of `bucket` at most (the high-priority ceilings).
    pub fn ceilings(&self, bucket: BucketId) -> &Ceilings {
        &self.limits_of(bucket).ceilings[1]
    }

    /// What ordinary (normal-priority) traffic may use of `bucket`: the ceilings less the
    /// reserve kept for high priority.
    pub fn normal_ceilings(&self, bucket: BucketId) -> &Ceilings {
        &self.limits_of(bucket).ceilings[0]
    }

    /// The (project, model) a bucket belongs to.
    pub fn bucket_owner(&self, bucket: BucketId) -> (usize, usize) {
        self.limits_of(bucket).owner
    }

    pub(crate) fn limits_of(&self, bucket: BucketId) -> &BucketLimits {
        self.buckets[bucket.0 as usize].as_ref().expect("buckets handed out belong to the pool")
    }

    fn add_project(&mut self, p: ProjectSpec) -> Result<(), PoolError> {
        if self.project_index.contains_key(&p.id) {
            return Err(PoolError::DuplicateProject(p.id));
        }
        if p.limits.len() != self.models.len() {
            return Err(PoolError::LimitsPerModel { project: p.id, given: p.limits.len(), models: self.models.len() });
        }
        for (m, l) in self.models.iter().zip(&p.limits) {
            if let Some(l) = l {
                check_limits(&p.id, &m.name, l)?;
            }
        }
        self.project_index.insert(p.id.clone(), self.projects.len());
        self.projects.push(p);
        Ok(())
    }

    fn add(&mut self, k: KeySpec) -> Result<(), PoolError> {
        if self.index.contains_key(&k.id) {
            return Err(PoolError::DuplicateKey(k.id));
        }
        let project =
            *self.project_index.get(&k.project).ok_or_else(|| PoolError::UnknownProject(k.project.clone()))?;
        self.index.insert(k.id.clone(), KeyId(self.keys.len() as u32));
        self.keys.push(KeyState { id: k.id, project, enabled: true, revoked: false, removed: false });
        Ok(())
    }

    /// The pool after `event`, or why the event does not apply (this pool is unchanged).
    pub(crate) fn apply<E>(
        &self,
        event: PoolEvent,
        bucket: &mut dyn FnMut(&BucketKey) -> Result<BucketId, E>,
    ) -> Result<Self, PoolBuildError<E>> {
        let mut next = self.clone();
        let mut set = |id: String, f: fn(&mut KeyState)| -> Result<(), PoolError> {
            let k = next.index.get(&id).ok_or(PoolError::UnknownKey(id))?;
            f(&mut next.keys[k.0 as usize]);
            Ok(())
        };
        match event {
            PoolEvent::Add(k) => next.add(k)?,
            PoolEvent::Remove(id) => set(id, |k| k.removed = true)?,
            PoolEvent::Enable(id) => set(id, |k| k.enabled = true)?,
            PoolEvent::Disable(id) => set(id, |k| k.enabled = false)?,
            PoolEvent::Revoke(id) => set(id, |k| k.revoked = true)?,
            PoolEvent::AddProject(p) => next.add_project(p)?,
            PoolEvent::SetLimits { project, model, limits } => {
                let m = next.model(&model).ok_or(PoolError::UnknownModel(model))?;
                let p = *next.project_index.get(&project).ok_or(PoolError::UnknownProject(project))?;
                check_limits(&next.projects[p].id, &next.models[m].name, &limits)?;
                next.projects[p].limits[m] = Some(limits);
            }
        }
        next.rebuild(bucket).map_err(PoolBuildError::Store)?;
        Ok(next)
    }

    /// The stable name of the bucket of `key` (or of its project) for `model`.
    fn bucket_key(&self, key: usize, model: usize) -> BucketKey {
        let owner = match self.scope {
            QuotaScope::Project => self.projects[self.keys[key].project].id.clone(),
            QuotaScope::Key => format!("key:{}", self.keys[key].id),
        };
        BucketKey { owner, model: self.models[model].name.clone() }
    }

    /// Recomputes groups, ceilings and capacity from the keys' states.
    fn rebuild<E>(&mut self, bucket: &mut dyn FnMut(&BucketKey) -> Result<BucketId, E>) -> Result<(), E> {
        let models = self.models.len();
        self.groups = vec![Vec::new(); models];
        self.totals = vec![CapacityTotals::default(); models];
        self.largest = vec![[[0; 2]; 2]; models];
        let mut slot: HashMap<BucketId, usize> = HashMap::new();
        for i in 0..self.keys.len() {
            let key = &self.keys[i];
            if !key.usable() {
                continue;
            }
            let project = key.project;
            for model in 0..models {
                let Some(limits) = self.projects[project].limits[model] else { continue };
                let id = bucket(&self.bucket_key(i, model))?;
                let b = id.0 as usize;
                if self.buckets.len() <= b {
                    self.buckets.resize(b + 1, None);
                }
                self.buckets[b] = Some(BucketLimits::new(&limits, self.safety, self.reserve, (project, model)));
                let groups = &mut self.groups[model];
                match slot.get(&id) {
                    Some(&g) => groups[g].keys.push(KeyId(i as u32)),
                    None => {
                        slot.insert(id, groups.len());
                        groups.push(Group { bucket: id, project, keys: vec![KeyId(i as u32)] });
                    }
                }
                self.totals[model].keys += 1;
            }
        }
        self.group_limits = self
            .groups
            .iter()
            .map(|gs| gs.iter().map(|g| self.buckets[g.bucket.0 as usize].expect("set above")).collect())
            .collect();
        for model in 0..models {
            for (g, bl) in self.groups[model].iter().zip(&self.group_limits[model]) {
                let limits = self.projects[g.project].limits[model].expect("grouped projects serve the model");
                let t = &mut self.totals[model];
                t.buckets += 1;
                let high = bl.ceilings[1];
                for d in Dimension::ALL {
                    let (l, u) = (limits.get(d), high.get(d));
                    t.limits[d.index()] = t.limits[d.index()].saturating_add(if l == u64::MAX { 0 } else { l });
                    t.usable[d.index()] = t.usable[d.index()].saturating_add(if u == u64::MAX { 0 } else { u });
                }
                for p in 0..2 {
                    let c = bl.ceilings[p];
                    let big = &mut self.largest[model][p];
                    big[0] = big[0].max(c.get(Dimension::Tpm));
                    big[1] = big[1].max(c.get(Dimension::Tpd));
                }
            }
        }
        Ok(())
    }
}

impl BucketLimits {
    fn new(limits: &Limits, safety: f64, reserve: f64, owner: (usize, usize)) -> Self {
        let ceilings = [Ceilings::from_limits(limits, safety, reserve), Ceilings::from_limits(limits, safety, 0.0)];
        Self { inverse: [ceilings[0].reciprocals(), ceilings[1].reciprocals()], ceilings, owner }
    }
}

/// Every limit of a served model is at least one.
fn check_limits(project: &str, model: &str, l: &Limits) -> Result<(), PoolError> {
    for d in Dimension::ALL {
        if l.get(d) == 0 {
            return Err(PoolError::ZeroLimit { project: project.into(), model: model.into(), dimension: d });
        }
    }
    Ok(())
}

/// Building or changing a pool failed: the pool itself, or the store naming its buckets.
#[derive(Debug)]
pub(crate) enum PoolBuildError<E> {
    Pool(PoolError),
    Store(E),
}

impl<E> From<PoolError> for PoolBuildError<E> {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}
