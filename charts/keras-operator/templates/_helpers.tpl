{{/* Chart name, overridable. */}}
{{- define "kerasop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's resources. */}}
{{- define "kerasop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kerasop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kerasop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kerasop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kerasop.labels" -}}
helm.sh/chart: {{ include "kerasop.chart" . }}
app.kubernetes.io/name: {{ include "kerasop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keras-operator
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "kerasop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kerasop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kerasop.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "kerasop.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtime.image.repository (default .Chart.AppVersion .Values.runtime.image.tag) -}}
{{- end -}}

{{/* The slim serving image, or "" (the operator then uses the runtime image for servers). */}}
{{- define "kerasop.servingImage" -}}
{{- with .Values.runtime.servingImage.repository -}}
{{- printf "%s:%s" . (default $.Chart.AppVersion $.Values.runtime.servingImage.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespaces that get a Role, a RoleBinding and the runtime ServiceAccount (namespaced mode). */}}
{{- define "kerasop.watchNamespaces" -}}
{{- join "," (uniq .Values.watchNamespaces) -}}
{{- end -}}

{{/*
The operator's rules: exactly what it does, nothing more (no wildcards).
Shared by the ClusterRole (all namespaces) and the per-namespace Roles.
*/}}
{{- define "kerasop.operatorRules" -}}
# Its own resources: watch them, add finalizers/annotations (kopf), write status.
# Children are written with server-side apply and merge patches (patch; create when missing).
- apiGroups: ["kerasop.io"]
  resources: ["kerastrainingjobs", "kerasmodelservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kerasop.io"]
  resources: ["kerastrainingjobs/status", "kerasmodelservices/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["kerasop.io"]
  resources: ["kerastrainingjobs/finalizers", "kerasmodelservices/finalizers"]
  verbs: ["update"]
# Trainer workers.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Progress is read from trainer pod logs; stuck pods are deleted; server pods are
# annotated when their rollout plan changes (the kubelet then refreshes the mounted plan).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Worker discovery (headless) and model-server Services; model store volumes.
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# kerasop-trainer / kerasop-server ServiceAccounts (no permissions), created on demand and
# owned (non-controller) by every job/service using them, so they go with the last one.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
# Rollout plans of model servers (stable/candidate/weight), mounted into the server pods.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
# Model servers.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Events on its objects (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.kueue.enabled }}
# Kueue support: queued jobs' Workloads are read for status, and patched (spec.active) to
# pause a queued job by hand (docs/queues.md).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}
