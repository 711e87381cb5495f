{{/* The chart's name, as names and labels use it. */}}
{{- define "conda-store.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: object names are this plus a component suffix. */}}
{{- define "conda-store.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "conda-store.operator" -}}
{{- printf "%s-operator" (include "conda-store.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conda-store.apiServer" -}}
{{- printf "%s-api-server" (include "conda-store.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; pass a dict with "root" (the chart context) and "component". */}}
{{- define "conda-store.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "conda-store.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The labels a Deployment selects its pods by. */}}
{{- define "conda-store.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conda-store.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "conda-store.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* A volume's source: a node directory or a claim. Pass the volume's values. */}}
{{- define "conda-store.volumeSource" -}}
{{- if .hostPath -}}
hostPath:
  path: {{ .hostPath | quote }}
  type: Directory
{{- else -}}
persistentVolumeClaim:
  claimName: {{ required "a volume needs hostPath or persistentVolumeClaim.claimName" .persistentVolumeClaim.claimName | quote }}
{{- end }}
{{- end }}

{{/* The operator's flag form of a volume: hostPath:/dir or pvc:NAME. */}}
{{- define "conda-store.volumeFlag" -}}
{{- if .hostPath }}
{{- printf "hostPath:%s" .hostPath }}
{{- else }}
{{- printf "pvc:%s" .persistentVolumeClaim.claimName }}
{{- end }}
{{- end }}

{{/* The artifact storage settings both servers read (environment variables). */}}
{{- define "conda-store.storageEnv" -}}
- name: CONDA_STORE_STORAGE
  value: {{ .Values.storage.backend | quote }}
{{- if eq .Values.storage.backend "local" }}
- name: CONDA_STORE_STORAGE_DIR
  value: {{ .Values.storage.local.mountPath | quote }}
{{- else }}
- name: CONDA_STORE_S3_BUCKET
  value: {{ .Values.storage.s3.bucket | quote }}
- name: CONDA_STORE_S3_REGION
  value: {{ .Values.storage.s3.region | quote }}
{{- with .Values.storage.s3.endpoint }}
- name: CONDA_STORE_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.s3.prefix }}
- name: CONDA_STORE_S3_PREFIX
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ . | quote }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ . | quote }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A claim the chart creates; pass a dict with "root", "volume" and "component". */}}
{{- define "conda-store.claim" -}}
{{- $pvc := .volume.persistentVolumeClaim }}
{{- if and (not .volume.hostPath) $pvc.create }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $pvc.claimName }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "conda-store.labels" (dict "root" .root "component" .component) | nindent 4 }}
  annotations:
    # Artifacts and environments outlive an uninstall.
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml $pvc.accessModes | nindent 4 }}
  {{- with $pvc.storageClassName }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ $pvc.size }}
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus scraping and the user's; pass a dict with "root", "port", "extra". */}}
{{- define "conda-store.podAnnotations" -}}
{{- if .root.Values.prometheusAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The operator's rights on build Jobs and their pods, where the Jobs run. */}}
{{- define "conda-store.jobRules" -}}
# One Job per build step; their pods' termination messages carry the step reports.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete, deletecollection]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
{{- end }}
