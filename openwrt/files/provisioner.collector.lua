-- /usr/lib/lua/prometheus-collectors/provisioner.lua: provisionerd's metrics for
-- prometheus-node-exporter-lua (OpenWrt's exporter), which loads every collector here and
-- calls its scrape() on each request. The daemon's own text format (from `provisionerctl
-- metrics`) goes out as it is, through the exporter's output(); an error (no daemon)
-- shows as node_scrape_collector_success{collector="provisioner"} 0.

local function scrape()
  local ctl = io.popen("provisionerctl metrics 2>/dev/null")
  local lines = 0
  for line in ctl:lines() do
    output(line)
    lines = lines + 1
  end
  ctl:close()
  if lines == 0 then
    error("provisionerctl metrics: provisionerd does not answer")
  end
end

return { scrape = scrape }
