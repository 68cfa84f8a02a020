// What a lab pod whose image is nginx runs: Debian's nginx with its own prefix under the lab's state dir.
import { join } from 'node:path'

/** The welcome page the official nginx image served when the seed document was written (nginx 1.8). */
export const WELCOME_HTML = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
    body {
        width: 35em;
        margin: 0 auto;
        font-family: Tahoma, Verdana, Arial, sans-serif;
    }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
`

export const isNginxImage = (image: string): boolean => {
  const repo = image.split('@')[0]!.replace(/:[^/:]*$/, '')
  const last = repo.split('/').pop() ?? ''
  return last.startsWith('nginx')
}

/**
 * nginx.conf for one container: every path lives under `dir` (prefix, pid, logs, temp files), so pods never share
 * state with each other or with a system nginx. Workers run as nobody; the temp dir is world-writable for them.
 */
export function renderNginxConf(dir: string, ports: readonly number[], ipv6 = false): string {
  const listen = ports.flatMap(p => [`    listen ${p};`, ...(ipv6 ? [`    listen [::]:${p};`] : [])]).join('\n')
  return `# written by tundra lab: one pod's nginx; every path is under ${dir}
daemon off;
worker_processes 1;
user nobody nogroup;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} notice;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log ${join(dir, 'access.log')};
  client_body_temp_path ${join(dir, 'tmp', 'body')};
  proxy_temp_path ${join(dir, 'tmp', 'proxy')};
  fastcgi_temp_path ${join(dir, 'tmp', 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'tmp', 'uwsgi')};
  scgi_temp_path ${join(dir, 'tmp', 'scgi')};
  sendfile on;
  keepalive_timeout 65;
  server {
${listen}
    server_name localhost;
    root ${join(dir, 'html')};
    index index.html;
    location / { try_files $uri $uri/ =404; }
  }
}
`
}
