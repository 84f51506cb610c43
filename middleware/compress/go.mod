module github.com/pylon-gateway/pylon/middleware/compress

go 1.26.0

require (
	github.com/andybalholm/brotli v1.3.0
	github.com/klauspost/compress v1.20.4
)

require (
	github.com/pylon-gateway/pylon v0.2.0
	go.uber.org/goleak v1.3.0
)

require github.com/go-chi/chi/v5 v5.5.0
