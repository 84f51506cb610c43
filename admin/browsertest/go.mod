module github.com/pylon-gateway/pylon/admin/browsertest

go 1.26.0

require (
	github.com/pylon-gateway/pylon v0.2.0
	go.uber.org/goleak v1.3.0
)
