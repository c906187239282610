//! Pool reconciliation: a whole new [`PoolSpec`] applied to a running engine, all or nothing
//! (a service's config reload).

use std::sync::Arc;

use crate::config::ConfigError;
use crate::pool::{KeySpec, PoolEvent, PoolSpec, ProjectSpec};
use crate::store::Buckets;
use crate::Engine;

/// What a reconciliation changed (ids as given: redact key ids before showing them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolChanges {
    /// Keys added.
    pub keys_added: Vec<String>,
    /// Keys removed.
    pub keys_removed: Vec<String>,
    /// Projects added.
    pub projects_added: Vec<String>,
    /// Limits changed, as (project, model).
    pub limits_changed: Vec<(String, String)>,
}

impl PoolChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.keys_added.is_empty()
            && self.keys_removed.is_empty()
            && self.projects_added.is_empty()
            && self.limits_changed.is_empty()
    }
}

/// Why a new pool cannot replace the running one. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The models (their names or their order) differ: the engine's tables are per model.
    #[error("the models cannot change while the engine runs ({was} now, {now} in the new pool); restart it")]
    ModelsChanged {
        /// The running pool's models.
        was: String,
        /// The new pool's models.
        now: String,
    },
    /// A kept key names another project: its reservations are in the old one's buckets.
    #[error("key {} cannot move to another project while the engine runs; give it a new id", crate::redact(.0))]
    KeyMoved(String),
    /// A removed key is back under the same id.
    #[error("key {} was removed; a removed key cannot return under the same id", crate::redact(.0))]
    KeyReturned(String),
    /// A project no longer serves a model it served.
    #[error("project '{project}' cannot stop serving '{model}' while the engine runs; remove its keys or restart")]
    ModelDropped {
        /// The project's id.
        project: String,
        /// The model's name.
        model: String,
    },
    /// The new pool does not hold together (a zero limit, an unknown project …).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl<S: Buckets> Engine<S> {
    /// Makes the pool `spec`, as one change: keys and projects added, keys removed, limits
    /// changed. Everything is checked first; either all of it applies (in one pool swap:
    /// admissions see the old pool or the new, never a mix) or none of it does. Admissions
    /// under way finish on the pool they started with.
    pub fn reconcile_pool(&self, spec: &PoolSpec) -> Result<PoolChanges, ReconcileError> {
        let changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.pool.load_full();
        let names = |models: &mut dyn Iterator<Item = &str>| models.collect::<Vec<_>>().join(", ");
        let (was, now) = (
            names(&mut current.models().iter().map(|m| m.name.as_str())),
            names(&mut spec.models.iter().map(|m| m.name.as_str())),
        );
        if was != now {
            return Err(ReconcileError::ModelsChanged { was, now });
        }
        let models = current.models();
        let mut changes = PoolChanges::default();
        let mut events = Vec::new();
        for p in &spec.projects {
            match current.projects().iter().find(|q| q.id == p.id) {
                None => {
                    changes.projects_added.push(p.id.clone());
                    events.push(PoolEvent::AddProject(ProjectSpec { id: p.id.clone(), limits: p.limits.clone() }));
                }
                Some(q) => {
                    for (m, (was, now)) in q.limits.iter().zip(&p.limits).enumerate() {
                        match (was, now) {
                            (Some(_), None) => {
                                let (project, model) = (p.id.clone(), models[m].name.clone());
                                return Err(ReconcileError::ModelDropped { project, model });
                            }
                            (_, Some(limits)) if was != now => {
                                let (project, model) = (p.id.clone(), models[m].name.clone());
                                changes.limits_changed.push((project.clone(), model.clone()));
                                events.push(PoolEvent::SetLimits { project, model, limits: *limits });
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        for k in &spec.keys {
            match current.key(&k.id).map(|i| &current.keys()[i.0 as usize]) {
                Some(s) if s.removed => return Err(ReconcileError::KeyReturned(k.id.clone())),
                Some(s) if current.projects()[s.project].id != k.project => {
                    return Err(ReconcileError::KeyMoved(k.id.clone()));
                }
                Some(_) => {}
                None => {
                    changes.keys_added.push(k.id.clone());
                    events.push(PoolEvent::Add(KeySpec { id: k.id.clone(), project: k.project.clone() }));
                }
            }
        }
        let mut gone = Vec::new();
        for (i, s) in current.keys().iter().enumerate().filter(|(_, s)| !s.removed) {
            if !spec.keys.iter().any(|k| k.id == s.id) {
                changes.keys_removed.push(s.id.clone());
                gone.push(crate::KeyId(i as u32));
                events.push(PoolEvent::Remove(s.id.clone()));
            }
        }
        if changes.is_empty() {
            return Ok(changes);
        }
        // Every event on a copy; the running pool is swapped only if all of them apply.
        let mut next = (*current).clone();
        for e in events {
            next = next.apply(e, &mut |k| self.store.bucket(k)).map_err(ConfigError::from)?;
        }
        self.grow_views(&next);
        self.pool.store(Arc::new(next));
        drop(changing);
        for k in gone {
            self.health.forget_key(k);
        }
        self.forget_exhaustion(None);
        #[cfg(feature = "async")]
        self.wake_queues(None);
        Ok(changes)
    }
}
