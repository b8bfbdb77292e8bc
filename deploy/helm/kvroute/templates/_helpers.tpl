{{/* Chart name. */}}
{{- define "kvroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name of the router's objects. */}}
{{- define "kvroute.fullname" -}}
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

{{/* The engines' StatefulSet and headless Service (short: pod names add "-N"). */}}
{{- define "kvroute.engineName" -}}
{{- printf "%s-engine" (include "kvroute.fullname" . | trunc 45 | trimSuffix "-") -}}
{{- end -}}

{{- define "kvroute.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kvroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "kvroute.engineSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kvroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine
{{- end -}}

{{- define "kvroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* One TOML value: strings, numbers, booleans and lists as JSON (valid TOML). */}}
{{- define "kvroute.tomlValue" -}}
{{- if kindIs "map" . -}}
{{- fail (printf "router.config: a nested table is not a router.toml value: %v" .) -}}
{{- end -}}
{{- toJson . -}}
{{- end -}}

{{/*
The router's instances: the engines' pods (engines.enabled), then
router.config.instances.
*/}}
{{- define "kvroute.instances" -}}
{{- $list := list -}}
{{- if .Values.engines.enabled -}}
{{- $eng := include "kvroute.engineName" . -}}
{{- $exact := eq (dig "directory" "mode" "predicted" .Values.router.config) "exact" -}}
{{- range $i := until (int .Values.engines.replicas) -}}
{{- $host := printf "%s-%d.%s" $eng $i $eng -}}
{{- $inst := dict "url" (printf "http://%s:%d" $host (int $.Values.engines.ports.http)) -}}
{{- if $exact -}}
{{- $_ := set $inst "kv_events" (printf "connect:tcp://%s:%d" $host (int $.Values.engines.ports.kvEvents)) -}}
{{- $_ := set $inst "replay" (printf "tcp://%s:%d" $host (int $.Values.engines.ports.kvReplay)) -}}
{{- end -}}
{{- $list = append $list $inst -}}
{{- end -}}
{{- end -}}
{{- range .Values.router.config.instances -}}
{{- $list = append $list . -}}
{{- end -}}
{{- toJson $list -}}
{{- end -}}

{{/* router.toml from router.config: top-level keys, then tables, then [[instances]]. */}}
{{- define "kvroute.routerToml" -}}
# Rendered by the kvroute Helm chart from .Values.router.config.
{{- range $k, $v := .Values.router.config }}
{{- if and (ne $k "instances") (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ $k }} = {{ include "kvroute.tomlValue" $v }}
{{- end }}
{{- end }}
{{- if .Values.router.adminPort }}
admin_listen = {{ printf "0.0.0.0:%d" (int .Values.router.adminPort) | toJson }}
{{- end }}
{{- if .Values.router.extProcPort }}
ext_proc_listen = {{ printf "0.0.0.0:%d" (int .Values.router.extProcPort) | toJson }}
{{- end }}
{{- range $table, $body := .Values.router.config }}
{{- if and (kindIs "map" $body) $body }}

[{{ $table }}]
{{- range $k, $v := $body }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "kvroute.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range (include "kvroute.instances" . | fromJsonArray) }}

[[instances]]
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "kvroute.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
