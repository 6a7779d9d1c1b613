module gpuvisor/bench/goproxy

go 1.19
