{{- define "llmd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmd.fullname" -}}
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

{{/* labels on every object */}}
{{- define "llmd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmd
{{- end -}}

{{- define "llmd.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis" (include "llmd.fullname" .) -}}
{{- else -}}
{{- required "redis.external.host is required when redis.enabled=false" .Values.redis.external.host -}}
{{- end -}}
{{- end -}}

{{- define "llmd.redisPort" -}}
{{- if .Values.redis.enabled -}}6379{{- else -}}{{ .Values.redis.external.port }}{{- end -}}
{{- end -}}

{{/* the workers' --redis URL */}}
{{- define "llmd.redisURL" -}}
{{- $pw := ternary "" .Values.redis.external.password .Values.redis.enabled -}}
{{- if $pw -}}
{{- printf "redis://:%s@%s:%s" (urlquery $pw) (include "llmd.redisHost" .) (include "llmd.redisPort" .) -}}
{{- else -}}
{{- printf "redis://%s:%s" (include "llmd.redisHost" .) (include "llmd.redisPort" .) -}}
{{- end -}}
{{- end -}}

{{/* PromQL label matcher of one role's worker pods */}}
{{- define "llmd.roleMatcher" -}}
namespace="{{ .root.Release.Namespace }}",llmd_role="{{ .role }}",llmd_instance="{{ .root.Release.Name }}"
{{- end -}}

{{/* the worker roles deployed, space separated; checks workers.mode */}}
{{- define "llmd.workerRoles" -}}
{{- $w := .Values.workers -}}
{{- if eq $w.mode "colocated" -}}
both
{{- else if eq $w.mode "disaggregated" -}}
{{- if eq $w.backend "cuda" -}}
{{- fail "workers.backend=cuda needs workers.mode=colocated: cuda workers keep their KV pages in GPU memory, and the GPU transports (cuda-ipc, nccl) have not been verified on a GPU yet" -}}
{{- end -}}
prefill decode
{{- else -}}
{{- fail (printf "workers.mode must be disaggregated or colocated, not %q" $w.mode) -}}
{{- end -}}
{{- end -}}

{{/* a role's Deployment name */}}
{{- define "llmd.workerName" -}}
{{- printf "%s-%s" (include "llmd.fullname" .root) (ternary "worker" .role (eq .role "both")) -}}
{{- end -}}

