{{- define "sso.name" -}}{{ .Release.Name }}{{- end }}
{{- define "sso.controller" -}}{{ .Release.Name }}-controller{{- end }}
{{- define "sso.broker" -}}{{ .Release.Name }}-broker{{- end }}
{{- define "sso.brokerConfigSecret" -}}{{ .Release.Name }}-broker-config{{- end }}
{{- define "sso.sessionKeysSecret" -}}
{{- .Values.broker.sessionKeys.existingSecret | default (printf "%s-session-keys" .Release.Name) -}}
{{- end }}
{{- define "sso.domainKeySecret" -}}{{ .Release.Name }}-domain-key{{- end }}
{{- define "sso.leaseName" -}}{{ .Release.Name }}-controller{{- end }}
{{- define "sso.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end }}
{{- define "sso.publicURL" -}}{{ required "publicURL is required (the broker's public base URL, e.g. https://sso.example.com)" .Values.publicURL }}{{- end }}

{{- define "sso.labels" -}}
app.kubernetes.io/name: sso-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "sso.selector" -}}
app.kubernetes.io/name: sso-operator
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Restricted Pod Security Standard, for every pod and container. */}}
{{- define "sso.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}
{{- define "sso.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
